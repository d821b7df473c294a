"""``d4rt train`` (and scripts/train_d4rt.py): the seed's training flags (snake_case spellings still accepted)
plus --preset, --synthetic N, --max-steps, --max-minutes and the training-only auxiliary losses.

Parses and validates every argument into a :class:`d4rt.training.options.TrainOptions` before torch or Lightning
is imported; :func:`run` then calls :func:`d4rt.training.fit.fit`. ``--output-dir`` is a run folder that a later
``--resume`` continues (checkpoints, logs, ``pretrained/``), not a folder written whole at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from d4rt.cli.common import UsageError, non_negative_int, positive_int
from d4rt.data.synthetic import TRAIN_SEED_BASE, VAL_SEED_BASE


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--train-data-path", type=Path, help="folder of clip .npz files (written here with --synthetic)")
    data.add_argument("--val-data-path", type=Path, help="folder of validation clips (written here with --synthetic)")
    data.add_argument("--synthetic", type=non_negative_int, default=0, metavar="N",
                      help=f"generate N synthetic training clips (seeds {TRAIN_SEED_BASE}..N-1) and N/10 (2 to 20) "
                           f"validation clips (seeds {VAL_SEED_BASE}+) under --output-dir/data, unless the paths "
                           "are given")
    data.add_argument("--num-queries", type=positive_int, default=2048, help="queries per clip (the paper's 2048)")
    data.add_argument("--depth-fraction", type=float, default=0.0,
                      help="share of training queries with t_src = t_tgt = t_cam (pure depth; the paper: 0)")
    data.add_argument("--image-size", type=positive_int, default=None, help="network input S (default: the preset's)")
    data.add_argument("--num-frames", type=positive_int, default=None, help="frames per clip (default: the preset's)")
    data.add_argument("--num-workers", type=non_negative_int, default=0,
                      help="data-loading processes per device (they also render --synthetic clips)")
    model = p.add_argument_group("model")
    model.add_argument("--preset", default="base", help="architecture preset: tiny | base | g (base: the seed's card)")
    model.add_argument("--init", type=Path, help="start from these save_pretrained weights (a folder)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=positive_int, default=1, help="clips per step and device")
    opt.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    opt.add_argument("--min-lr", type=float, default=1e-6, help="final learning rate of the cosine")
    opt.add_argument("--weight-decay", type=float, default=0.03, help="AdamW weight decay on weight matrices")
    opt.add_argument("--warmup-steps", type=non_negative_int, default=1000, help="linear learning-rate warm-up steps")
    opt.add_argument("--confidence-warmup-steps", type=non_negative_int, default=1000,
                     help="steps with the confidence held at 1 (guards against confidence collapse)")
    opt.add_argument("--token-depth-weight", type=float, default=0.0,
                     help="weight of the training-only per-token depth loss on the encoder memory (0: off)")
    opt.add_argument("--own-token-weight", type=float, default=0.0,
                     help="weight of the training-only loss pulling the first decoder block's head 0 to the "
                          "query's own token (0: off)")
    opt.add_argument("--own-token-init", action="store_true",
                     help="before training, set the first decoder block's head 0 query / key weights so it attends "
                          "to the query's own token (fitted on 8 training clips; weights only)")
    run_ = p.add_argument_group("run")
    run_.add_argument("--max-epochs", type=positive_int, default=None,
                      help="stop after this many epochs (default: by --max-steps, or 1 epoch)")
    run_.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: by epochs)")
    run_.add_argument("--max-minutes", type=float, default=None,
                      help="also stop after this much training time (resume later with --resume; the cosine "
                           "schedule still follows --max-steps)")
    run_.add_argument("--devices", default="auto", help="number of devices, or 'auto'")
    run_.add_argument("--num-nodes", type=positive_int, default=1, help="machines for multi-node DDP")
    run_.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    run_.add_argument("--accelerator", default="auto", help="cpu | gpu | auto")
    run_.add_argument("--precision", default=None,
                      help="fp32 | bf16 (mixed: float32 weights, matmuls in bfloat16 under autocast, CPU or GPU) | "
                           "fp16, or Lightning's names 32-true | bf16-mixed | 16-mixed (default: bf16 on GPUs, "
                           "fp32 on the CPU)")
    run_.add_argument("--output-dir", type=Path, default=Path("runs/d4rt"),
                      help="run folder: logs/, checkpoints/last.ckpt, pretrained/ (and data/ with --synthetic)")
    run_.add_argument("--val-every", type=positive_int, default=None,
                      help="validate every this many steps (default: once per epoch)")
    run_.add_argument("--ckpt-every", type=positive_int, default=None, help="write last.ckpt every this many steps")
    run_.add_argument("--log-every", type=positive_int, default=10, help="log the losses every this many steps")
    run_.add_argument("--seed", type=int, default=0, help="seed of the weights' initialisation and the queries")
    run_.add_argument("--resume", type=Path, help="resume from a Lightning .ckpt (e.g. OUTPUT_DIR/checkpoints/last.ckpt)")
    run_.add_argument("--save-dtype", choices=["float32", "float16"], default="float32",
                      help="dtype of the final save_pretrained weights")


def options(args: argparse.Namespace):
    """The parsed arguments -> TrainOptions (raises ValueError naming the bad one)."""
    from d4rt.training.options import TrainOptions

    return TrainOptions(
        output_dir=args.output_dir, num_queries=args.num_queries, batch_size=args.batch_size,
        num_workers=args.num_workers, depth_fraction=args.depth_fraction, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        confidence_warmup_steps=args.confidence_warmup_steps, token_depth_weight=args.token_depth_weight,
        own_token_weight=args.own_token_weight, own_token_init=args.own_token_init,
        max_steps=args.max_steps, max_epochs=args.max_epochs,
        max_minutes=args.max_minutes, accelerator=args.accelerator,
        devices=int(args.devices) if str(args.devices).isdigit() else args.devices, num_nodes=args.num_nodes,
        strategy=args.strategy, precision=args.precision, val_every=args.val_every, ckpt_every=args.ckpt_every,
        log_every=args.log_every, seed=args.seed, init=args.init, resume=args.resume, save_dtype=args.save_dtype,
    )


def validate(args: argparse.Namespace) -> None:
    from d4rt.config import PRESETS

    if args.preset not in PRESETS:
        raise UsageError(f"--preset {args.preset!r} is not one of {sorted(PRESETS)}")
    try:
        options(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.synthetic and args.train_data_path is None:
        raise UsageError("give --train-data-path (a folder of clips) or --synthetic N to generate N clips")
    for flag, path in (("--train-data-path", args.train_data_path), ("--val-data-path", args.val_data_path)):
        if path is not None and not args.synthetic and not Path(path).exists():
            raise UsageError(f"{flag} {path} does not exist; give a folder of clip .npz files or use --synthetic N")
    if args.init is not None and not (Path(args.init) / "config.json").is_file():
        raise UsageError(f"--init {args.init} is not a save_pretrained folder (no config.json in it)")
    if args.resume is not None and not Path(args.resume).is_file():
        raise UsageError(f"--resume {args.resume} does not exist; give a Lightning .ckpt such as "
                         f"{args.output_dir}/checkpoints/last.ckpt")


def run(args: argparse.Namespace) -> int:
    from d4rt.config import D4RTConfig
    from d4rt.data.datamodule import find_clips
    from d4rt.training.fit import fit, synthetic_clips
    from d4rt.training.options import TrainingClips

    config = D4RTConfig.preset(args.preset)
    changes = {k: v for k, v in (("image_size", args.image_size), ("num_frames", args.num_frames)) if v is not None}
    config = config.replace(**changes) if changes else config
    train_dir = args.train_data_path or args.output_dir / "data" / "train"
    val_dir = args.val_data_path or (args.output_dir / "data" / "val" if args.synthetic else None)
    if args.synthetic:
        clips = synthetic_clips(train_dir, val_dir, args.synthetic, config, workers=args.num_workers)
    else:
        clips = TrainingClips(find_clips(train_dir), find_clips(val_dir) if val_dir is not None else [])
    fit(config, clips, options(args))
    return 0
