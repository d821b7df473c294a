"""``d4rt occupancy``: per-frame 4D occupancy of a video from a D4RT export folder.

Runs the video in the engines' windows, aligned by Sim(3) as ``d4rt infer`` does (any length), queries a dense
point map per frame (t_src = t_tgt = t_cam = t), poses the frames with the recovered cameras and ray-casts one
occupied / free / unobserved voxel grid per frame (its size follows from the scene's extent and --voxel). Writes
into --out:
``occupancy.npz`` (sparse, with poses and intrinsics; read it with ``d4rt.occupancy.io.load_occupancy``),
``ply/frame_XXXX.ply`` (occupied voxel centres), ``bev.png`` (top views over time; skipped with a note when
matplotlib is not installed) and ``summary.json``.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from d4rt.cli.common import add_output_arguments

    p.add_argument("video", help="the clip: a video file (mp4, avi, ...) or a .npy of frames [T, H, W, 3] uint8")
    p.add_argument("--export", required=True, metavar="DIR", help="an export folder (written by `d4rt export`); "
                   "--engines is its deprecated old name")
    add_output_arguments(p)
    p.add_argument("--start", type=int, default=0, help="first frame of the video to use")
    p.add_argument("--stride", type=int, default=1, help="use every stride-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames (default: the whole "
                   "video, in windows of the engines' T frames)")
    p.add_argument("--voxel", type=float, default=0.05, help="voxel edge in scene units (metres with --metric-scale)")
    p.add_argument("--metric-scale", type=float, default=1.0, help="metres per scene unit, when known (default 1)")
    p.add_argument("--depth-size", type=int, default=None, help="each frame's point map: n x n queries (default: "
                   "the export's S). Not the voxel grid, whose size follows from the scene's extent and --voxel")
    p.add_argument("--pose-size", type=int, default=None, help="n x n queries per frame for the camera poses and "
                   "the window alignment (default: min(32, S / 2))")
    p.add_argument("--min-confidence", type=float, default=0.5, help="drop points below this confidence")
    p.add_argument("--max-range", type=float, default=None, help="drop points farther than this from the camera")
    temporal = p.add_mutually_exclusive_group()
    temporal.add_argument(
        "--smooth",
        type=float,
        default=0.0,
        metavar="LAMBDA",
        help="second-difference temporal smoothing of each voxel (0: off)",
    )
    temporal.add_argument(
        "--window",
        type=int,
        default=1,
        metavar="W",
        help="L3ROcc's sliding-window union over the last W frames (1: off)",
    )
    p.add_argument("--backend", default="auto", help="runtime backend: auto, tensorrt, onnxruntime-cuda, ...")
    p.add_argument("--batch-size", type=int, default=65536, help="queries per decoder call")
    p.add_argument("--ply", choices=("all", "last", "none"), default="all", help="which frames get a PLY file")
    p.add_argument("--no-plot", action="store_true", help="skip the bird's-eye-view PNG (needs matplotlib)")
    p.add_argument(
        "--bev-y-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("YMIN", "YMAX"),
        help="heights (world y, down) shown in the top view, e.g. above the floor (default: all)",
    )


def validate(args: argparse.Namespace) -> None:
    """Every argument checked before the export loads; a problem is one line (exit 2)."""
    from pathlib import Path

    from d4rt.cli.common import UsageError, check_output, check_video

    if not Path(args.video).exists():
        raise UsageError(f"no video at {args.video}")
    if not Path(args.export).is_dir():
        raise UsageError(f"no export folder at {args.export}; make one with `d4rt export CKPT_DIR --out DIR`")
    if not (args.voxel > 0 and args.voxel < float("inf")):
        raise UsageError(f"--voxel must be a positive voxel edge in scene units, got {args.voxel}")
    if args.start < 0 or args.stride < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise UsageError(f"--start must be >= 0, --stride >= 1 and --max-frames >= 1; got {args.start}, "
                         f"{args.stride}, {args.max_frames}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.depth_size is not None and args.depth_size < 2:
        raise UsageError(f"--depth-size must be at least 2 queries per side, got {args.depth_size}")
    if args.pose_size is not None and args.pose_size < 2:
        raise UsageError(f"--pose-size must be at least 2 queries per side, got {args.pose_size}")
    if args.smooth < 0:
        raise UsageError(f"--smooth must be >= 0, got {args.smooth}")
    if args.window < 1:
        raise UsageError(f"--window must be >= 1 frame, got {args.window}")
    check_output(args.out, args.overwrite, inputs=(args.video, args.export))
    check_video(args.video, args.start, args.stride, args.max_frames)


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from d4rt.cli.common import command_line, output_dir
    from d4rt.occupancy.grid import occupancy_from_video
    from d4rt.occupancy.io import plot_bev, save_occupancy, write_frame_ply
    from d4rt.occupancy.temporal import smooth_occupancy, window_union
    from d4rt.runtime import load
    from d4rt.runtime.files import write_text_atomic
    from d4rt.runtime.infer import load_frames

    timings = {}
    t0 = time.perf_counter()
    rt = load(args.export, backend=args.backend)
    occ, scene = occupancy_from_video(
        rt,
        load_frames(args.video),
        voxel_size=args.voxel,
        size=args.depth_size,
        pose_size=args.pose_size,
        start=args.start,
        stride=args.stride,
        max_frames=args.max_frames,
        batch_size=args.batch_size,
        progress=True,
        metric_scale=args.metric_scale,
        min_confidence=args.min_confidence,
        max_range=args.max_range,
    )
    print(
        f"{scene.num_frames} frames of {args.video} ({scene.original_size[1]} x {scene.original_size[0]}) "
        f"encoded at {scene.image_size} x {scene.image_size} on {rt.name} in {len(scene.windows)} window(s)"
    )
    timings["queries_and_ray_casting_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.smooth > 0:
        occ = smooth_occupancy(occ, strength=args.smooth)
    elif args.window > 1:
        occ = window_union(occ, args.window)
    timings["temporal_s"] = time.perf_counter() - t0

    with output_dir(args.out, args.overwrite, inputs=(args.video, args.export),
                    command=command_line(args)) as out:
        files = [save_occupancy(out / "occupancy.npz", occ)]
        frames = {"all": range(occ.num_frames), "last": [occ.num_frames - 1], "none": []}[args.ply]
        files += [write_frame_ply(out / "ply" / f"frame_{t:04d}.ply", occ, t) for t in frames]
        plotted = False
        if not args.no_plot:
            try:
                files.append(plot_bev(out / "bev.png", occ, y_range=args.bev_y_range))
                plotted = True
            except ImportError:
                pass  # matplotlib is optional for the runtime: noted below
        counts = occ.counts()
        summary = {
            "video": str(args.video),
            "export": str(args.export),
            "backend": rt.name,
            "start": args.start,
            "stride": args.stride,
            "depth_size": scene.xyz_cam.shape[1],
            "windows": [[int(scene.source_frames[r.start]), int(scene.source_frames[r.stop - 1])] for r in scene.windows],
            "pose_size": args.pose_size,
            "bev_png": plotted,
            "frames": occ.num_frames,
            "grid_shape": list(occ.grid.shape),
            "voxel_size": occ.grid.voxel_size,
            "metric_scale": occ.metric_scale,
            "origin": occ.grid.origin.tolist(),
            "smooth": args.smooth,
            "window": args.window,
            "occupied_per_frame": counts[:, 0].tolist(),
            "free_per_frame": counts[:, 1].tolist(),
            **timings,
        }
        files.append(write_text_atomic(out / "summary.json", json.dumps(summary, indent=1)))

    print(f"{occ.num_frames} frames, voxel grid {' x '.join(map(str, occ.grid.shape))} (voxels of "
          f"{occ.grid.voxel_size:g}, around every point and camera)")
    print(f"{'frame':>5s} {'occupied':>9s} {'free':>9s} {'unobserved':>11s}")
    for t, (o, f, u) in enumerate(counts):
        print(f"{t:5d} {o:9d} {f:9d} {u:11d}")
    print("time: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in timings.items()))
    print(f"wrote {len(files)} files to {args.out}")
    if not args.no_plot and not plotted:
        print("  (no bev.png: `pip install matplotlib` for it)")
    return 0
