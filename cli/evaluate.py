"""``d4rt evaluate``: score a checkpoint on held-out synthetic clips, TAPVid-3D clips or PointOdyssey sequences.

Parses and checks every argument (no torch imported), then calls :func:`d4rt.evaluation.evaluate.evaluate` and
prints / writes its report. The metrics and their sources: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from d4rt.cli.common import UsageError, non_negative_int, positive_int

FORMATS = ("clips", "tapvid3d", "pointodyssey")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-data", type=Path, required=True,
                   help="folder (or one file) of clip .npz files (written there first with --synthetic N), of "
                        "TAPVid-3D .npz clips, or of PointOdyssey sequence folders (see --format)")
    p.add_argument("--format", choices=FORMATS, default="clips",
                   help="clips: d4rt synthetic clips (depth, 3-D points, tracks, poses); tapvid3d: tracks (+ poses "
                        "with extrinsics_w2c); pointodyssey: tracks, depth and poses")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="save_pretrained directory or Lightning .ckpt (none: an untrained --preset model)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "base", "g"],
                   help="preset of the untrained model when --ckpt is not given")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="input size of the untrained model (a checkpoint uses its own; giving another is an error)")
    p.add_argument("--synthetic", type=non_negative_int, default=0, metavar="N",
                   help="first generate N held-out synthetic clips (seeds 2,000,000+) into --test-data")
    p.add_argument("--num-queries", type=positive_int, default=2048,
                   help="the paper's queries per synthetic clip (3-D EPE, visibility)")
    p.add_argument("--track-points", type=positive_int, default=256, help="random tracks per synthetic clip")
    p.add_argument("--depth-stride", type=positive_int, default=4, help="depth scored at every n-th pixel")
    p.add_argument("--pose-size", type=positive_int, default=16, help="query grid (n x n) of the pose estimator")
    p.add_argument("--start", type=non_negative_int, default=0,
                   help="first frame scored of a TAPVid-3D / PointOdyssey clip (default 0: every frame, as the "
                        "benchmark's official script scores it; a track queried before it is not scored)")
    p.add_argument("--max-frames", type=positive_int, default=None,
                   help="score at most this many frames of each TAPVid-3D / PointOdyssey clip from --start "
                        "(default: to the end of the clip; longer than the model's frames runs in aligned windows)")
    p.add_argument("--save-predictions", type=Path, default=None, metavar="DIR",
                   help="TAPVid-3D: also write each clip's predicted tracks into this new folder as tapnet's "
                        "evaluate_model.py reads them (<clip>.npz: tracks_XYZ, visibility), to score them there too")
    p.add_argument("--batch-size", type=positive_int, default=8192, help="queries per decoder call")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs (auto: cuda when available)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="fixes the untrained model, queries and tracks")
    p.add_argument("--output", type=Path, default=None,
                   help="write the report (mean, per clip, frames scored) here as JSON")


def validate(args: argparse.Namespace) -> None:
    if args.ckpt is not None and not args.ckpt.exists():
        raise UsageError(f"--ckpt {args.ckpt} does not exist; give a save_pretrained directory or a .ckpt file")
    if args.ckpt is not None and args.image_size is not None:
        raise UsageError("--image-size is for an untrained model; a checkpoint uses its own input size: drop it")
    if args.synthetic and args.format != "clips":
        raise UsageError("--synthetic N writes d4rt clips: use it with --format clips")
    if not args.synthetic and not args.test_data.exists():
        raise UsageError(f"--test-data {args.test_data} does not exist (generate clips there with --synthetic N)")
    if args.pose_size < 2:
        raise UsageError(f"--pose-size must be >= 2, got {args.pose_size}")
    if args.max_frames is not None and args.max_frames < 2:
        raise UsageError(f"--max-frames must be >= 2 (the model's tubelet spans 2 frames), got {args.max_frames}")
    if args.format == "clips" and (args.start or args.max_frames is not None):
        raise UsageError("--start / --max-frames select frames of TAPVid-3D / PointOdyssey clips; synthetic clips "
                         "are scored on the dataset's fixed window: drop them or pass --format tapvid3d/pointodyssey")
    if args.save_predictions is not None:
        if args.format != "tapvid3d" or args.start or args.max_frames is not None:
            raise UsageError("--save-predictions writes TAPVid-3D predictions of whole clips: use it with --format "
                             "tapvid3d, without --start / --max-frames")
        folder = args.save_predictions
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"--save-predictions {folder} exists and is not an empty folder; name a new folder")
    if args.output is not None and args.output.is_dir():
        raise UsageError(f"--output {args.output} is a folder; name a .json file")


def run(args: argparse.Namespace) -> int:
    import torch

    from d4rt.benchmarking import run_record
    from d4rt.data.synthetic import TEST_SEED_BASE, generate_clips
    from d4rt.evaluation.evaluate import EvalOptions, evaluate, find_eval_paths, load_model
    from d4rt.runtime.files import write_text_atomic

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = load_model(args.ckpt, args.preset, args.seed, args.image_size).to(device)
    cfg = model.config
    if args.synthetic:
        generate_clips(args.test_data, range(TEST_SEED_BASE, TEST_SEED_BASE + args.synthetic), cfg.num_frames,
                       cfg.image_size)
    options = EvalOptions(num_queries=args.num_queries, track_points=args.track_points,
                          depth_stride=args.depth_stride, pose_size=args.pose_size, seed=args.seed, start=args.start,
                          max_frames=args.max_frames, batch_size=args.batch_size)
    paths = find_eval_paths(args.test_data, args.format)
    if args.save_predictions is None:
        report = evaluate(model, paths, args.format, options, progress=print)
    else:
        from d4rt.cli.common import output_dir

        with output_dir(args.save_predictions) as folder:  # written whole at the end, never half
            report = evaluate(model, paths, args.format, options, progress=print, predictions_dir=folder)
    report["ckpt"] = str(args.ckpt) if args.ckpt else f"untrained {args.preset} (seed {args.seed})"
    report["run"] = run_record(device=device)
    n = len(report["clips"])
    whole = all(c["frames"] == [0, c["frames_in_file"]] for c in report["per_clip"])
    frames = sorted({tuple(c["frames"]) for c in report["per_clip"]})
    scored = ("every frame of each clip" if whole and args.format != "clips"
              else f"frames scored {', '.join(f'{a}..{b - 1}' for a, b in frames)} of each clip")
    print(f"\n{n} clip{'s' if n != 1 else ''} ({args.format}), model {report['ckpt']}, {scored} "
          f"({report['seconds']} s)")
    for k, v in report["mean"].items():
        covered = report["clips_per_metric"][k]
        print(f"  {k:32s} {v:.4f}" + ("" if covered == n else f"   ({covered} of {n} clips)"))
    totals = {k: sum(c.get(k, 0) for c in report["per_clip"]) for c in report["per_clip"] for k in c
              if k.startswith(("dropped_", "gt_nan_", "tracks_"))}
    if "tracks_in_set" in totals:
        print(f"  tracks scored: {totals['tracks_scored']} of {totals['tracks_in_set']}")
    if totals.get("gt_nan_visible") or totals.get("gt_nan_occluded"):
        print(f"  ground-truth NaN points: {totals['gt_nan_visible']} visible (scored as misses, as the official "
              f"code does), {totals['gt_nan_occluded']} occluded")
    dropped = {k: v for k, v in totals.items() if k.startswith("dropped_")}
    if any(dropped.values()):
        print("  " + ", ".join(f"{k.removeprefix('dropped_')}: {v}" for k, v in dropped.items()))
    if args.output is not None:
        write_text_atomic(args.output, json.dumps(report, indent=2) + "\n")
        print(f"-> {args.output}")
    if args.save_predictions is not None:
        print(f"-> {args.save_predictions} (predictions in the official TAPVid-3D format)")
    return 0
