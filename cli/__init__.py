"""The ``d4rt`` command. Each subcommand lives in its own module, imported only when named.

A command module provides ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports (torch, onnx,
tensorrt) happen inside ``run`` so ``d4rt --help`` is instant and the runtime's commands work without torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("d4rt.cli.demo", "the main job end to end: export, verify, (build an engine), infer on a sample clip"),
    "convert-opend4rt": ("d4rt.cli.convert_opend4rt", "convert an OpenD4RT checkpoint into a save_pretrained dir"),
    "memory-plan": ("d4rt.cli.memory_plan", "memory of the exported model per device, and the largest query batch"),
    "occupancy": ("d4rt.cli.occupancy", "per-frame 4D occupancy grids of a video from an export folder"),
    "export": ("d4rt.cli.export", "export a checkpoint to an export folder: encoder/decoder ONNX graphs + manifest"),
    "build-engine": ("d4rt.cli.build_engine", "build TensorRT engines into an export folder from its ONNX graphs"),
    "infer": ("d4rt.cli.infer", "depth, point cloud, cameras and tracks of a video from an export folder"),
    "view": ("d4rt.cli.view", "show a result in the browser (point clouds, cameras, tracks over time), or record it"),
    "serve": ("d4rt.cli.serve", "serve an export folder from Triton Inference Server: encode once, batched queries"),
    "bench": ("d4rt.cli.bench", "encode latency and query throughput per backend (JSON)"),
    "train": ("d4rt.cli.train", "train D4RT with Lightning (synthetic clips or clip folders)"),
    "evaluate": ("d4rt.cli.evaluate", "evaluate a checkpoint: depth, 3-D points, tracks, poses, visibility"),
}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after each flag's help, unless the help already says its default or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or any(action.default is x for x in (None, False, True, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help, and defaults shown in every --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="d4rt", description="D4RT 4D reconstruction: train, convert, export, build engines, infer, benchmark."
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (or D4RT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error (or D4RT_DEBUG=1)")
        importlib.import_module(module).add_arguments(p)
    return parser


def kebab_flags(argv: list[str]) -> list[str]:
    """The seed's snake_case flags (``--img_size``) as aliases of the kebab-case ones (``--image-size``)."""
    out = []
    for a in argv:
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            name = name.replace("_", "-")
            a = ALIASES.get(name, name) + eq + value
        out.append(a)
    return out


# old spellings -> today's flag
ALIASES = {"--img-size": "--image-size", "--test-data-path": "--test-data"}
# deprecated flags -> today's flag: accepted one more release, with a one-line warning
DEPRECATED = {
    "--engines": "--export",
    "--grid": "--depth-size",  # only `d4rt occupancy` had it
    "--pose-grid": "--pose-size",
    "--track-grid": "--track-size",
    "--dense-grid": "--dense-size",
}


def deprecated_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Today's spelling of each deprecated flag in ``argv``, and one warning line per deprecated flag used."""
    out, warnings = [], []
    for a in argv:
        name, eq, value = a.partition("=")
        if name in DEPRECATED:
            warnings.append(f"warning: {name} is deprecated and goes in the next release; use {DEPRECATED[name]}")
            a = DEPRECATED[name] + eq + value
        out.append(a)
    return out, warnings


# The pyproject extra that brings a missing package (by its top-level import name); torch and the packages every
# torch command needs come with the command's own extra (COMMAND_EXTRAS).
PACKAGE_EXTRAS = {
    "onnxruntime": "runtime", "cv2": "runtime", "tqdm": "runtime", "tensorrt": "tensorrt", "cuda": "tensorrt",
    "onnx": "export", "onnxscript": "export", "ml_dtypes": "export", "triton": "kernels", "lightning": "train",
    "matplotlib": "train", "pytriton": "serve", "tritonclient": "serve",
}
COMMAND_EXTRAS = {"export": "export", "demo": "export", "convert-opend4rt": "torch", "bench": "export",
                  "train": "train", "evaluate": "train", "build-engine": "tensorrt", "serve": "serve"}


def missing_package_message(command: str, module: str) -> str:
    """One line for a command whose Python package is not installed: which one, and the install that brings it."""
    top = module.split(".")[0]
    extra = PACKAGE_EXTRAS.get(top) or COMMAND_EXTRAS.get(command, "all")
    return (f"needs the Python package {top!r}, which is not installed here (a runtime-only install has no "
            f"torch); install the {extra} extra from the repository: pip install -c constraints.txt -e \".[{extra}]\"")


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error is one line on stderr (exit 2 for usage, 1 for a failed run); the traceback
    only with ``--debug`` or ``D4RT_DEBUG=1``."""
    argv, warnings = deprecated_flags(kebab_flags(list(sys.argv[1:] if argv is None else argv)))
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["d4rt", *map(shlex.quote, argv)])  # recorded in each output folder
    for line in dict.fromkeys(warnings):
        print(f"d4rt {args.command}: {line}", file=sys.stderr)
    debug = getattr(args, "debug", False) or os.environ.get("D4RT_DEBUG", "") not in ("", "0")
    module = importlib.import_module(args._module)
    prog = f"d4rt {args.command}"
    try:
        if hasattr(module, "validate"):
            module.validate(args)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into one line
        if debug:
            raise
        from d4rt.cli.common import UsageError

        if isinstance(e, ModuleNotFoundError) and e.name and not e.name.startswith("d4rt"):
            print(f"{prog}: {missing_package_message(args.command, e.name)}", file=sys.stderr)
            return 1
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, UsageError):
            print(f"{prog}: error: {message} (see `{prog} --help`)", file=sys.stderr)
            return 2
        kind = "" if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, RuntimeError)) else f"{type(e).__name__}: "
        print(f"{prog}: {kind}{message} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
