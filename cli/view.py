"""``d4rt view``: a ``d4rt infer`` result in the browser (viser), or a recording of it that needs no server.

    d4rt view results/                                  # http://127.0.0.1:8080/ until Ctrl-C
    d4rt view clip.mp4 --export exported/                 # infer (into a temporary folder), then show
    d4rt view results/ --record recording/              # recording/index.html opens from the disk

Needs the viewer extra: pip install ".[viewer]".
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from d4rt.cli.common import UsageError, check_output, positive_int


def port_number(value: str) -> int:
    """argparse type: a TCP port, 1 .. 65535."""
    n = positive_int(value)
    if n > 65535:
        raise ValueError(f"expected a port in 1 .. 65535, got {n}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    from d4rt.runtime.runtime import BACKENDS

    p.add_argument("source", help="a results folder (`d4rt infer ... --out FOLDER`), or a video with --export")
    p.add_argument("--export", default=None, help="an export folder (`d4rt export`): infer SOURCE, a video, first")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="engine backend for --export (as `d4rt "
                   "infer --backend`)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="with --export: infer at most this many "
                   "frames (default: the whole video)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 shows it to the network)")
    p.add_argument("--port", type=port_number, default=8080, help="port to listen on")
    p.add_argument("--points", type=positive_int, default=None, help="points per frame on screen (default: 100000; "
                   "20000 in a --record)")
    p.add_argument("--tracks", type=int, default=64, help="3-D tracks drawn as trails (0: none)")
    p.add_argument("--point-size", type=float, default=None, help="point size in scene units (default: about "
                   "the spacing of the points)")
    p.add_argument("--record", default=None, metavar="FOLDER", help="write a recording (index.html, opens without a "
                   "server; scene.viser) into FOLDER instead of serving")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --record folder that d4rt wrote")


def validate(args: argparse.Namespace) -> None:
    if importlib.util.find_spec("viser") is None:
        raise UsageError("the viewer needs viser: pip install \".[viewer]\" (or pip install viser)")
    source = Path(args.source)
    if args.export is None:
        if source.is_file():
            raise UsageError(f"{source} is a file; to view a video pass --export DIR (a `d4rt export` folder), or "
                             f"give a results folder")
        if not source.is_dir():
            raise UsageError(f"{source} does not exist; give a results folder (`d4rt infer VIDEO --export DIR --out "
                             f"FOLDER`) or a video with --export DIR")
    else:
        export = Path(args.export)
        if not source.is_file():
            raise UsageError(f"video {source} does not exist; give a video file or a .npy of frames [T, H, W, 3]")
        if not (export.is_dir() and (export / "manifest.json").is_file()):
            raise UsageError(f"--export {export} is not an export folder (no manifest.json); make one with "
                             f"`d4rt export CKPT_DIR --out DIR`")
    if args.tracks < 0:
        raise UsageError(f"--tracks must be >= 0, got {args.tracks}")
    if args.point_size is not None and not args.point_size > 0:
        raise UsageError(f"--point-size must be > 0, got {args.point_size}")
    if args.record is not None:
        check_output(args.record, args.overwrite, inputs=(args.source, args.export))
    else:
        from d4rt.viewer.app import check_port_free

        try:
            check_port_free(args.host, args.port)
        except OSError as e:
            raise UsageError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    import tempfile

    from d4rt.viewer import open_result, serve, write_recording
    from d4rt.viewer.results import ResultError

    with tempfile.TemporaryDirectory(prefix="d4rt-view-") as work:
        try:
            result = open_result(args.source, args.export, work, backend=args.backend, max_frames=args.max_frames)
        except ResultError as e:
            raise UsageError(str(e)) from None
        if args.record is not None:
            from d4rt.cli.common import command_line, output_dir

            with output_dir(args.record, args.overwrite, inputs=(args.source, args.export),
                            command=command_line(args)) as tmp:
                write_recording(result, tmp, budget=args.points or 20_000, tracks=args.tracks,
                                point_size=args.point_size)
            print(f"d4rt view: {result.num_frames} frames recorded -> {Path(args.record) / 'index.html'} (opens "
                  f"without a server)")
            return 0
        serve(result, host=args.host, port=args.port, budget=args.points or 100_000, tracks=args.tracks,
              point_size=args.point_size)
        print("d4rt view: stopped")
    return 0
