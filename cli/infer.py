"""``d4rt infer``: a video through the engines -> depth maps, point cloud, camera trajectory, tracks, preview.

    d4rt infer clip.mp4 --engines engines/ --out results/

Writes into --out (each file atomically):
    depth/NNNN.png      16-bit depth per frame, 65535 = depth_max (in depth.npz and trajectory.json)
    depth.npz           depth [T, S, S] float32, confidence [T, S, S], depth_max
    points.ply          coloured point cloud: every frame's grid at its own time, in frame 0's camera
    trajectory.json     T_wc [T, 4, 4] (camera-to-world, frame 0 = world, OpenCV axes) and K [T, 3, 3]
    tracks.npz          3D tracks of a grid of frame-0 pixels over all frames (frame 0's camera)
    preview.png         frames, depth maps and the trajectory from above (needs matplotlib)
    summary.json        backend, sizes, timings
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (mp4, avi, ...) or a .npy of frames [T, H, W, 3] uint8")
    p.add_argument("--engines", required=True, help="an engine directory (d4rt export / build-engine)")
    p.add_argument("--backend", default="auto", help="auto, tensorrt, onnxruntime, onnxruntime-cpu, onnxruntime-cuda, "
                   "onnxruntime-tensorrt or torch")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--start", type=int, default=0, help="first frame of the video to use")
    p.add_argument("--stride", type=int, default=1, help="use every stride-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames (else the video must "
                   "give exactly the exported T frames)")
    p.add_argument("--batch-size", type=int, default=8192, help="queries per engine call")
    p.add_argument("--depth-size", type=int, default=None, help="depth map resolution (default: S)")
    p.add_argument("--cloud-size", type=int, default=None, help="point cloud grid per frame (default: S / 2)")
    p.add_argument("--track-grid", type=int, default=16, help="track a grid x grid of frame-0 pixels")
    p.add_argument("--pose-grid", type=int, default=32, help="grid for camera poses and intrinsics")
    p.add_argument("--min-confidence", type=float, default=0.0, help="drop cloud points below this confidence")


def run(args: argparse.Namespace) -> int:
    from d4rt.runtime import load
    from d4rt.runtime.infer import infer_clip, load_frames

    rt = load(args.engines, backend=args.backend)
    summary = infer_clip(
        rt, load_frames(args.video), args.out, start=args.start, stride=args.stride, max_frames=args.max_frames,
        batch_size=args.batch_size, depth_size=args.depth_size, cloud_size=args.cloud_size,
        track_grid=args.track_grid, pose_grid=args.pose_grid, min_confidence=args.min_confidence,
    )
    t = summary["timings"]
    print(f"{args.video}: {summary['frames']} frames on {summary['backend']} -> {args.out}")
    print("  " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in t.items()))
    if not summary["preview"]:
        print("  (no preview.png: `pip install matplotlib` for it)")
    return 0
