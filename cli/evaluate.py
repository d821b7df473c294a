"""``d4rt evaluate`` (and scripts/test_d4rt.py): the seed's test flags plus --synthetic N, --format.

Arguments only; the work (torch, Lightning) is imported in :func:`run` from :mod:`d4rt.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from d4rt.data.synthetic import TEST_SEED_BASE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test_data_path", type=Path, help="folder of clip .npz files (written here with --synthetic), "
                   "of TAPVid-3D .npz clips, or of PointOdyssey sequence folders (see --format)")
    p.add_argument("--format", choices=["clips", "tapvid3d", "pointodyssey"], default="clips",
                   help="clips: d4rt synthetic clips (all metrics); tapvid3d / pointodyssey: APD3D + occlusion")
    p.add_argument("--ckpt", type=Path, help="save_pretrained directory or Lightning .ckpt (none: untrained model)")
    p.add_argument("--preset", default="tiny", help="preset of the untrained model when --ckpt is not given")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help=f"generate N held-out synthetic clips (seeds {TEST_SEED_BASE}+) into --test_data_path")
    p.add_argument("--num_queries", type=int, default=2048)
    p.add_argument("--img_size", type=int, default=None,
                   help="input size; for a checkpoint it must equal its own (default: the model's)")
    p.add_argument("--track_points", type=int, default=256)
    p.add_argument("--depth_stride", type=int, default=4, help="depth evaluated at every n-th pixel")
    p.add_argument("--devices", default="auto")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="write the metrics (mean and per clip) here as JSON")


def run(args: argparse.Namespace) -> int:
    from d4rt.evaluation.evaluate import evaluate

    return evaluate(args)
