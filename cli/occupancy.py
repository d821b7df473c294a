"""``d4rt occupancy``: per-frame 4D occupancy of a video from a D4RT export folder.

Encodes the clip once, queries a dense point map per frame (t_src = t_tgt = t_cam = t), poses the frames with the
recovered cameras and ray-casts one occupied / free / unobserved grid per frame. Writes into --out:
``occupancy.npz`` (sparse, with poses and intrinsics; read it with ``d4rt.occupancy.io.load_occupancy``),
``ply/frame_XXXX.ply`` (occupied voxel centres), ``bev.png`` (top views over time) and ``summary.json``.
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
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="keep at most this many frames (else the video must give exactly the exported T frames)",
    )
    p.add_argument("--voxel", type=float, default=0.05, help="voxel edge in scene units (metres with --metric-scale)")
    p.add_argument("--metric-scale", type=float, default=1.0, help="metres per scene unit, when known (default 1)")
    p.add_argument("--grid", type=int, default=None, help="n x n queries per frame (default: the export's S)")
    p.add_argument("--pose-grid", type=int, default=32, help="n x n queries per frame for the camera poses")
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

    from d4rt.cli.common import UsageError, check_output

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
    if args.grid is not None and args.grid < 2:
        raise UsageError(f"--grid must be at least 2 queries per side, got {args.grid}")
    if args.pose_grid < 2:
        raise UsageError(f"--pose-grid must be at least 2 queries per side, got {args.pose_grid}")
    if args.smooth < 0:
        raise UsageError(f"--smooth must be >= 0, got {args.smooth}")
    if args.window < 1:
        raise UsageError(f"--window must be >= 1 frame, got {args.window}")
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise UsageError("the bird's-eye-view plot needs matplotlib: pip install matplotlib, or --no-plot") from e
    check_output(args.out, args.overwrite)


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from d4rt.cli.common import output_dir
    from d4rt.occupancy.grid import occupancy_from_scene
    from d4rt.occupancy.io import plot_bev, save_occupancy, write_frame_ply
    from d4rt.occupancy.temporal import smooth_occupancy, window_union
    from d4rt.runtime import load
    from d4rt.runtime.files import write_text_atomic
    from d4rt.runtime.infer import load_frames

    timings = {}
    t0 = time.perf_counter()
    rt = load(args.export, backend=args.backend)
    scene = rt.encode(load_frames(args.video), start=args.start, stride=args.stride, max_frames=args.max_frames)
    print(
        f"{scene.num_frames} frames of {args.video} ({scene.original_size[1]} x {scene.original_size[0]}) "
        f"encoded at {scene.image_size} x {scene.image_size} on {rt.name}"
    )
    timings["encode_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    occ = occupancy_from_scene(
        rt,
        scene,
        voxel_size=args.voxel,
        grid_size=args.grid,
        pose_grid=args.pose_grid,
        batch_size=args.batch_size,
        progress=True,
        metric_scale=args.metric_scale,
        min_confidence=args.min_confidence,
        max_range=args.max_range,
    )
    timings["queries_and_ray_casting_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.smooth > 0:
        occ = smooth_occupancy(occ, strength=args.smooth)
    elif args.window > 1:
        occ = window_union(occ, args.window)
    timings["temporal_s"] = time.perf_counter() - t0

    with output_dir(args.out, args.overwrite) as out:
        files = [save_occupancy(out / "occupancy.npz", occ)]
        frames = {"all": range(occ.num_frames), "last": [occ.num_frames - 1], "none": []}[args.ply]
        files += [write_frame_ply(out / "ply" / f"frame_{t:04d}.ply", occ, t) for t in frames]
        if not args.no_plot:
            files.append(plot_bev(out / "bev.png", occ, y_range=args.bev_y_range))
        counts = occ.counts()
        summary = {
            "video": str(args.video),
            "export": str(args.export),
            "backend": rt.name,
            "start": args.start,
            "stride": args.stride,
            "grid": args.grid or scene.image_size,
            "pose_grid": args.pose_grid,
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

    print(f"{occ.num_frames} frames, grid {' x '.join(map(str, occ.grid.shape))} at {occ.grid.voxel_size:g}")
    print(f"{'frame':>5s} {'occupied':>9s} {'free':>9s} {'unobserved':>11s}")
    for t, (o, f, u) in enumerate(counts):
        print(f"{t:5d} {o:9d} {f:9d} {u:11d}")
    print("time: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in timings.items()))
    print(f"wrote {len(files)} files to {args.out}")
    return 0
