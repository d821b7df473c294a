"""``d4rt memory-plan``: memory of the exported model per device, and the largest query batch."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="g", help="model preset (default: g, OpenD4RT's architecture)")
    p.add_argument("--config", default=None, help="a config.json instead of a preset (e.g. a converted checkpoint)")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the config's num_frames)")
    p.add_argument("--bytes", type=int, default=2, choices=(1, 2, 4), help="bytes per weight/activation (fp16: 2)")
    p.add_argument("--json", default=None, help="also write the plan as JSON here")


def run(args: argparse.Namespace) -> int:
    import json

    from d4rt.config import D4RTConfig
    from d4rt.memory_plan import format_plan, plan
    from d4rt.runtime.files import write_text_atomic

    config = D4RTConfig.load(args.config) if args.config else D4RTConfig.preset(args.preset)
    frames = args.frames or config.num_frames
    if frames > config.num_frames or frames % config.tubelet[0]:
        raise ValueError(f"--frames {frames}: expected a multiple of {config.tubelet[0]} up to {config.num_frames}")
    p = plan(config, frames, args.bytes)
    print(format_plan(p))
    if args.json:
        write_text_atomic(args.json, json.dumps(p, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0

