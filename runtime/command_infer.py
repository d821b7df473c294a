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


def load_frames(source: str | Path):
    """A .npy of frames, or the path itself (decoded by the runtime)."""
    import numpy as np

    source = Path(source)
    if source.suffix == ".npy":
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist")
        return np.load(source, allow_pickle=False)
    return source


def infer_clip(rt, source, out_dir: str | Path, *, start: int = 0, stride: int = 1, max_frames: int | None = None,
               batch_size: int = 8192, depth_size: int | None = None, cloud_size: int | None = None,
               track_grid: int = 16, pose_grid: int = 32, min_confidence: float = 0.0, progress: bool = True) -> dict:
    """Run every output of ``d4rt infer`` for one clip; returns the summary (also written as summary.json)."""
    import numpy as np

    from d4rt.runtime.geometry import grid_uv
    from d4rt.runtime.outputs import depth_to_uint16, write_json, write_npz, write_ply, write_png, write_preview

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 4)
        return result

    scene = timed("encode_s", rt.encode, source, start=start, stride=stride, max_frames=max_frames)
    common = {"batch_size": batch_size, "progress": progress}
    depth, confidence = timed("depth_s", rt.depth, scene, None, depth_size, True, **common)
    T_wc = timed("camera_poses_s", rt.camera_poses, scene, pose_grid, **common)
    K = timed("intrinsics_s", rt.intrinsics, scene, pose_grid, **common)
    cloud = timed("point_cloud_s", rt.point_cloud, scene, 0, cloud_size, None, min_confidence, **common)
    track_uv = grid_uv(track_grid)
    tracks = timed("tracks_s", rt.tracks, scene, track_uv, 0, 0, **common)

    valid = depth[np.isfinite(depth) & (depth > 0)]
    depth_max = float(valid.max()) if valid.size else 0.0
    for t in range(len(depth)):
        write_png(out_dir / "depth" / f"{t:04d}.png", depth_to_uint16(depth[t], depth_max))
    write_npz(out_dir / "depth.npz", depth=depth, confidence=confidence, depth_max=np.float32(depth_max))
    write_ply(out_dir / "points.ply", cloud["xyz"], cloud["rgb"])
    write_json(out_dir / "trajectory.json", {
        "convention": "T_wc camera-to-world 4x4, frame 0's camera is the world; OpenCV axes (+x right, +y down, "
                      "+z forward); K in pixels of the S x S network input; xyz up to one scale per clip",
        "image_size": scene.image_size, "original_size": list(scene.original_size), "depth_max": depth_max,
        "T_wc": T_wc.round(8).tolist(), "K": K.round(6).tolist(),
    })
    write_npz(out_dir / "tracks.npz", uv=track_uv, t_src=np.int32(0), **tracks)
    preview = True
    try:
        write_preview(out_dir / "preview.png", scene.frames, depth, T_wc)
    except ImportError:
        preview = False  # matplotlib is optional for the runtime
    summary = {
        "backend": rt.name, "frames": scene.num_frames, "image_size": scene.image_size,
        "original_size": list(scene.original_size), "aspect_ratio": scene.aspect_ratio,
        "depth_queries": int(depth.size), "cloud_points": int(len(cloud["xyz"])), "tracks": int(len(track_uv)),
        "preview": preview, "timings": timings,
    }
    write_json(out_dir / "summary.json", summary)
    return summary


def run(args: argparse.Namespace) -> int:
    from d4rt.runtime import load

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
