"""``d4rt convert-opend4rt CKPT OUT_DIR``: an OpenD4RT ``opend4rt.ckpt`` -> a save_pretrained directory
(``config.json`` + safetensors, sharded above 2 GB) that ``D4RT.from_pretrained`` and ``d4rt export`` read."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="the release's opend4rt.ckpt, or the folder holding it")
    p.add_argument("out_dir", help="directory to write config.json + model*.safetensors into")
    p.add_argument("--enc-heads", type=int, default=None, help="encoder heads (default: model.yaml, else rule)")
    p.add_argument("--dec-heads", type=int, default=None, help="decoder heads (default: model.yaml, else rule)")
    p.add_argument("--image-size", type=int, default=None, help="input side S (default: model.yaml, else 256)")
    p.add_argument("--model-yaml", default=None, help="the release's model.yaml (default: the one beside CKPT)")


def validate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from d4rt.cli.common import UsageError

    if not Path(args.ckpt).exists():
        raise UsageError(f"no OpenD4RT checkpoint at {args.ckpt}: give the release's opend4rt.ckpt or its folder")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; name a folder for config.json + model*.safetensors")
    for name, value in (("--enc-heads", args.enc_heads), ("--dec-heads", args.dec_heads),
                        ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from d4rt.config import D4RTConfig
    from d4rt.opend4rt import convert_opend4rt

    out = convert_opend4rt(
        args.ckpt,
        args.out_dir,
        enc_heads=args.enc_heads,
        dec_heads=args.dec_heads,
        image_size=args.image_size,
        model_yaml=args.model_yaml,
    )
    cfg = D4RTConfig.load(out / "config.json")
    files = sorted(p for p in Path(out).iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(
        f"{args.ckpt} -> {out}: preset {cfg.name!r}, {cfg.num_frames} frames at {cfg.image_size}^2; encoder "
        f"{cfg.enc_dim}/{cfg.enc_depth} blocks/{cfg.enc_heads} heads, decoder {cfg.dec_dim}/{cfg.dec_depth} "
        f"blocks/{cfg.dec_heads} heads (heads from: {cfg.extra['opend4rt']['enc_heads_from']}, "
        f"{cfg.extra['opend4rt']['dec_heads_from']})"
    )
    print(f"wrote {len(files)} files, {total / 1e9:.2f} GB: {', '.join(p.name for p in files)}")
    return 0
