"""The ``d4rt`` command. Each subcommand lives in its own module, imported only when named.

A command module provides ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports (torch, onnx,
tensorrt) happen inside ``run`` so ``d4rt --help`` is instant and the runtime's commands work without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("d4rt.demo", "the main job end to end: export, verify, (build an engine), infer on a sample clip"),
    "convert-opend4rt": ("d4rt.command_convert_opend4rt", "convert an OpenD4RT checkpoint into a save_pretrained dir"),
    "memory-plan": ("d4rt.memory_plan", "memory of the engines per device, and the largest query batch"),
    "occupancy": ("d4rt.runtime.command_occupancy", "per-frame 4D occupancy grids of a video from D4RT engines"),
    "export": ("d4rt.export.command_export", "export a checkpoint to encoder/decoder ONNX graphs + manifest"),
    "build-engine": ("d4rt.export.command_build_engine", "build TensorRT engines from exported ONNX graphs"),
    "infer": ("d4rt.runtime.command_infer", "depth, point cloud, cameras and tracks of a video from engines"),
    "bench": ("d4rt.runtime.command_bench", "encode latency and query throughput per backend (JSON)"),
    "train": ("d4rt.command_train", "train D4RT with Lightning (synthetic clips or clip folders)"),
    "evaluate": ("d4rt.command_evaluate", "evaluate a checkpoint: depth, 3-D points, tracks, poses, visibility"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="d4rt", description="D4RT 4D reconstruction: train, convert, export, build engines, infer, benchmark."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
