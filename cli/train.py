"""``d4rt train`` (and scripts/train_d4rt.py): the seed's training flags plus --preset, --synthetic N, --max_steps.

Arguments only; the work (torch, Lightning) is imported in :func:`run` from :mod:`d4rt.training.fit`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from d4rt.data.synthetic import TRAIN_SEED_BASE, VAL_SEED_BASE


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--train_data_path", type=Path, help="folder of clip .npz files (written here with --synthetic)")
    data.add_argument("--val_data_path", type=Path, help="folder of validation clips (written here with --synthetic)")
    data.add_argument("--synthetic", type=int, default=0, metavar="N",
                      help="generate N synthetic training clips (seeds 0..N-1) and N/10 (2 to 20) validation clips")
    data.add_argument("--num_queries", type=int, default=2048, help="queries per clip (default 2048, the paper's)")
    data.add_argument("--img_size", type=int, default=None, help="network input S (default: the preset's)")
    data.add_argument("--num_frames", type=int, default=None, help="frames per clip (default: the preset's)")
    data.add_argument("--num_workers", type=int, default=0,
                      help="data-loading processes per device (they also render --synthetic clips)")
    model = p.add_argument_group("model")
    model.add_argument("--preset", default="base", help="tiny | base | g (default: base, the seed's card)")
    model.add_argument("--init", type=Path, help="start from these save_pretrained weights")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch_size", type=int, default=1, help="clips per step and device")
    opt.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    opt.add_argument("--min_lr", type=float, default=1e-6, help="final learning rate of the cosine (default 1e-6)")
    opt.add_argument("--weight_decay", type=float, default=0.03)
    opt.add_argument("--warmup_steps", type=int, default=1000, help="linear learning-rate warm-up steps")
    opt.add_argument("--confidence_warmup_steps", type=int, default=1000,
                     help="steps with the confidence held at 1 (guards against confidence collapse)")
    run_ = p.add_argument_group("run")
    run_.add_argument("--max_epochs", type=int, default=None)
    run_.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (-1: by epochs)")
    run_.add_argument("--max_minutes", type=float, default=None,
                      help="also stop after this much training time (resume later with --resume; the cosine "
                           "schedule still follows --max_steps)")
    run_.add_argument("--devices", default="auto", help="number of devices, or 'auto'")
    run_.add_argument("--num_nodes", type=int, default=1)
    run_.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    run_.add_argument("--accelerator", default="auto", help="cpu | gpu | auto")
    run_.add_argument("--precision", default=None, help="default: bf16-mixed on GPUs, 32-true on the CPU")
    run_.add_argument("--output_dir", type=Path, default=Path("runs/d4rt"))
    run_.add_argument("--val_every", type=int, default=None, help="validate every this many steps (default: epochs)")
    run_.add_argument("--ckpt_every", type=int, default=None, help="write last.ckpt every this many steps")
    run_.add_argument("--log_every", type=int, default=10)
    run_.add_argument("--seed", type=int, default=0)
    run_.add_argument("--resume", type=Path, help="resume from a Lightning .ckpt")
    run_.add_argument("--save_dtype", choices=["float32", "float16"], default="float32",
                      help="dtype of the final save_pretrained weights")


def run(args: argparse.Namespace) -> int:
    from d4rt.training.fit import fit

    return fit(args)
