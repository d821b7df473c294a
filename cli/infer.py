"""``d4rt infer``: a whole video through an export folder -> depth maps, point cloud, camera trajectory, tracks, preview.

    d4rt infer clip.mp4 --export exported/ --out results/

Any length: a video longer than the export's T frames runs in overlapping windows aligned by Sim(3) (paper
App. B); --start / --stride / --max-frames select frames. Writes into --out (whole, at the end):
    depth/NNNN.png      16-bit depth per frame, named by source frame number; 65535 = depth_max
    frames/NNNN.png     the network's input frame (S x S RGB), named by source frame number
    depth.npz           depth [F, n, n] float32, confidence [F, n, n], depth_max, source_frames [F]
    points.ply          coloured point cloud: every frame's grid at its own time, in the first frame's camera
    points.npz          the same points: xyz [P, 3], rgb [P, 3], confidence [P], frame [P] (index into source_frames)
    trajectory.json     T_wc [F, 4, 4] (camera-to-world, first frame = world, OpenCV axes), K [F, 3, 3], windows
    tracks.npz          3D tracks of a grid of first-frame pixels over the whole video (world frame)
    dense_tracks.npz    with --dense-tracks: Alg. 1's all-pixel tracks
    preview.png         frames, depth maps and the trajectory from above (needs matplotlib)
    summary.json        backend, sizes, windows, timings
"""

from __future__ import annotations

import argparse
from pathlib import Path

import os

from d4rt.cli.common import (
    UsageError, add_output_arguments, check_output, check_video, non_negative_int, positive_int,
)

PRECISION_CHOICES = ("auto", "export", "fp32", "bf16", "fp16", "int8", "int8-qdq")


def grid_size(value: str) -> int:
    """argparse type: queries per side of a grid, an integer >= 2."""
    n = positive_int(value)
    if n < 2:
        raise ValueError(f"expected an integer >= 2, got {n}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    from d4rt.runtime.runtime import BACKENDS

    p.add_argument("video", help="a video file (mp4, avi, ...) or a .npy of frames [T, H, W, 3] uint8")
    p.add_argument("--export", required=True, metavar="DIR", help="an export folder (written by `d4rt export`, "
                   "TensorRT engines added by `d4rt build-engine`); --engines is its deprecated old name")
    add_output_arguments(p, "output directory")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="runtime backend (auto: tensorrt > "
                   "onnxruntime-cuda > onnxruntime-cpu)")
    p.add_argument("--precision", default=os.environ.get("D4RT_PRECISION", "auto"), choices=PRECISION_CHOICES,
                   help="auto (default, or the environment's D4RT_PRECISION): the fastest path within the accuracy "
                        "budget on this machine (a CPU with AMX: the export's checkpoint in bf16 on torch; elsewhere "
                        "the export's graphs; docs/precision.md); export: the export's graphs as they are; bf16 / fp16: "
                        "the torch backend; fp32 / int8: the export's graphs, which must be of that precision")
    p.add_argument("--compile", action="store_true", help="torch backend: the decoder under torch.compile (about a "
                   "minute once, then ~1.2x faster in bf16: for long videos)")
    p.add_argument("--start", type=non_negative_int, default=0, help="first frame of the video to use")
    p.add_argument("--stride", type=positive_int, default=1, help="use every stride-th frame")
    p.add_argument("--max-frames", type=positive_int, default=None, help="use at most this many frames (default: "
                   "the whole video)")
    p.add_argument("--window", type=positive_int, default=None, help="frames per window (default: the export's T)")
    p.add_argument("--overlap", type=positive_int, default=None, help="frames shared by consecutive windows "
                   "(default: window / 4)")
    p.add_argument("--batch-size", type=positive_int, default=8192, help="queries per decoder call")
    p.add_argument("--depth-size", type=grid_size, default=None, help="depth map resolution (default: S)")
    p.add_argument("--cloud-size", type=grid_size, default=None, help="point cloud grid per frame (default: S / 2)")
    p.add_argument("--track-size", type=grid_size, default=16, help="track a size x size grid of first-frame pixels")
    p.add_argument("--pose-size", type=grid_size, default=None, help="grid for camera poses, intrinsics and the "
                   "window alignment (default: min(32, S / 2))")
    p.add_argument("--min-confidence", type=float, default=0.0, help="drop cloud points below this confidence")
    p.add_argument("--dense-tracks", action="store_true", help="also track every pixel (paper Alg. 1: an occupancy "
                   "grid of visited pixels, new tracks only from unvisited ones) -> dense_tracks.npz. Costly: up to "
                   "frames x dense-size^2 x window queries, 14 bytes each in the file before compression (float16): "
                   "50 frames at 128^2 in 16-frame windows are up to 13 M queries (minutes on a CPU) and 180 MB. "
                   "Fewer when tracks stay visible; a real clip on the bundled synthetic-only model saves few")
    p.add_argument("--dense-size", type=grid_size, default=None, help="pixels per side for --dense-tracks "
                   "(default: S)")


def validate(args: argparse.Namespace) -> None:
    from d4rt.runtime.video import check_video_path

    video, export = Path(args.video), Path(args.export)
    try:
        check_video_path(video)
    except OSError as e:
        raise UsageError(str(e)) from None
    if args.precision in ("bf16", "fp16") and args.backend == "auto":
        args.backend = "torch"  # the only backend that runs them (ONNX Runtime has no bf16 path)
    elif args.precision == "bf16" and args.backend != "torch":
        from d4rt.runtime.precision import BF16_ON_ONNXRUNTIME

        raise UsageError(f"--precision bf16 with --backend {args.backend}: {BF16_ON_ONNXRUNTIME}")
    if args.compile and args.backend not in ("torch", "auto"):
        raise UsageError(f"--compile compiles the torch backend's decoder; --backend {args.backend} runs graphs")
    checkpoint_here = args.backend == "torch" and (export / "config.json").is_file()  # the torch backend's own
    if not (export.is_dir() and ((export / "manifest.json").is_file() or checkpoint_here)):
        raise UsageError(f"--export {export} is not an export folder (no manifest.json); make one with "
                         f"`d4rt export CKPT_DIR --out DIR` (the torch backend also takes a checkpoint directory)")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise UsageError(f"--min-confidence must be a probability in [0, 1], got {args.min_confidence}")
    if args.window is not None and args.overlap is not None and args.overlap >= args.window:
        raise UsageError(f"--overlap {args.overlap} must be smaller than --window {args.window}")
    check_output(args.out, args.overwrite, inputs=(args.video, args.export))
    check_video(video, args.start, args.stride, args.max_frames)


def run(args: argparse.Namespace) -> int:
    from d4rt.cli.common import command_line, output_dir
    from d4rt.runtime import load
    from d4rt.runtime.infer import infer_video, load_frames

    precision = None if args.precision == "export" else args.precision
    rt = load(args.export, backend=args.backend, precision=precision, compile_decoder=args.compile)
    if args.precision == "auto" and args.backend == "auto" and rt.name.startswith("torch"):
        print(f"this CPU has AMX: running the export's checkpoint in bf16 on torch ({rt.name}; docs/precision.md); "
              f"--precision fp32 runs the export's graphs instead")
    with output_dir(args.out, args.overwrite, inputs=(args.video, args.export),
                    command=command_line(args)) as tmp:
        summary = infer_video(
            rt, load_frames(args.video), tmp, start=args.start, stride=args.stride, max_frames=args.max_frames,
            window=args.window, overlap=args.overlap, batch_size=args.batch_size, depth_size=args.depth_size,
            cloud_size=args.cloud_size, track_size=args.track_size, pose_size=args.pose_size,
            min_confidence=args.min_confidence, dense_tracks=args.dense_tracks, dense_size=args.dense_size,
        )
    t = summary["timings"]
    print(f"{args.video}: frames {summary['first_frame']}..{summary['last_frame']} ({summary['frames']}) in "
          f"{summary['windows']} window(s) on {summary['backend']} -> {args.out}")
    print("  " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in t.items()))
    if "dense_tracks" in summary:
        d = summary["dense_tracks"]
        print(f"  dense tracks: {d['tracks']} tracks, coverage {d['coverage']:.1%}, {d['tracks_per_s']:.0f} "
              f"tracks/s, {d['queries_saved']:.1%} of the queries saved")
    if not summary["preview"]:
        print("  (no preview.png: `pip install matplotlib` for it)")
    return 0
