"""What every ``d4rt`` command shares: one-line errors, argument checks, and output folders that never mix runs.

A command module provides ``add_arguments(parser)``, optionally ``validate(args)`` (cheap checks, run before
anything heavy is imported or loaded; raise :class:`UsageError`) and ``run(args) -> int``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


class UsageError(ValueError):
    """A bad command line: printed as one line, exit status 2."""


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"expected an integer >= 1, got {n}")
    return n


def non_negative_int(value: str) -> int:
    """argparse type: an integer >= 0."""
    n = int(value)
    if n < 0:
        raise ValueError(f"expected an integer >= 0, got {n}")
    return n


def add_output_arguments(p, help_text: str = "output directory") -> None:
    p.add_argument("--out", required=True, help=f"{help_text} (written whole at the end, never half)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out that an earlier d4rt command "
                   f"wrote (it holds {MARKER}); any other folder is never replaced")


# Every folder output_dir writes holds this record (command, time, d4rt version): --overwrite replaces only those.
MARKER = ".d4rt-output.json"


def check_output(out: str | Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an --out that ``output_dir`` must not replace, before any work is done (UsageError, one line).

    Refused: a file; ``/``, the home folder, the d4rt repository, a git repository's root, the current folder or
    one of its ancestors; a folder that is or contains one of ``inputs`` (the command's video, export folder,
    checkpoint, data set: paths, None ignored); a non-empty folder without ``overwrite``; with ``overwrite``, a
    non-empty folder that d4rt did not write (no ``.d4rt-output.json`` in it).
    """
    given = str(out)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {given} is a file; name a folder")
    if not out.exists():
        return out
    where = out.resolve()
    protected = _protected_folder(where)
    if protected:
        raise UsageError(f"--out {given} is {protected}; d4rt replaces --out whole, so name a new folder for the "
                         f"results (e.g. --out results)")
    for item in inputs:
        if item is None:
            continue
        path = Path(item).resolve()
        if path == where or where in path.parents:
            what = "is" if path == where else "contains"
            raise UsageError(f"--out {given} {what} {item}, an input of this command; name another folder for "
                             f"the results")
    if not any(out.iterdir()):
        return out
    if not overwrite:
        raise UsageError(f"--out {given} exists and is not empty; pass --overwrite to replace it, or name a new folder")
    if not (out / MARKER).is_file():
        raise UsageError(f"--out {given} was not written by d4rt (it has no {MARKER}), so --overwrite will not "
                         f"replace it; name a new folder, or delete this one yourself")
    return out


def _protected_folder(where: Path) -> str:
    """What a resolved folder is when d4rt must never replace it ("the current folder", ...), else ""."""
    cwd = Path.cwd().resolve()
    if where == cwd:
        return "the current folder"
    if where in cwd.parents:
        return "the root folder" if where == Path(where.anchor) else "a folder that holds the current folder"
    if where == Path(where.anchor):
        return "the root folder"
    if where == Path.home().resolve():
        return "your home folder"
    if where == _REPOSITORY:
        return "the d4rt repository"
    if (where / ".git").exists():
        return "a git repository"
    return ""


# The source checkout this d4rt runs from (an editable install), or None for an installed wheel.
_REPOSITORY = Path(__file__).resolve().parent.parent
_REPOSITORY = _REPOSITORY if (_REPOSITORY / "pyproject.toml").is_file() else None


@contextlib.contextmanager
def output_dir(out: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = (),
               command: str | None = None) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on success it replaces ``out`` whole, on error it is removed.

    ``inputs``: the paths the command reads (video, export folder, checkpoint, ...): an ``out`` that is or holds
    one is refused, as is every folder :func:`check_output` refuses. The written folder carries ``.d4rt-output.json``
    (``command``, default ``d4rt`` + the command line; time; d4rt version), which is what lets a later
    ``--overwrite`` replace it.

    >>> with output_dir("results/", overwrite=True, inputs=["clip.mp4"], command="d4rt infer") as tmp:
    ...     (tmp / "depth.npz").write_bytes(b"...")
    """
    out = check_output(out, overwrite, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        write_marker(tmp, command)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_video(video: str | Path, start: int = 0, stride: int = 1, max_frames: int | None = None) -> int | None:
    """The video (file or .npy) exists, can be decoded and its --start / --stride / --max-frames select at least 2
    frames; else UsageError with the change that helps (or none: a 1-frame clip). Returns its frame count (None when
    the container does not say)."""
    from d4rt.runtime.video import count_frames

    try:
        total = count_frames(video)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    if total is None:
        return None
    if total < 2:
        raise UsageError(f"video {video} has {total} frame; D4RT needs a clip of at least 2 frames (a video, not a "
                         f"still image)")
    if start >= total:
        raise UsageError(f"--start {start} is beyond the video's {total} frames (0 .. {total - 1})")
    selected = len(range(start, total, stride))
    if max_frames is not None:
        selected = min(selected, max_frames)
    if selected >= 2:
        return total
    fixes = []
    if max_frames is not None and max_frames < 2:
        fixes.append("raise --max-frames to 2 or more")
    if len(range(start, total, stride)) < 2:
        if total - 1 - start >= 1 and stride > 1:
            fixes.append(f"use --stride {total - 1 - start} or less")
        if start > 0 and total - 1 - stride >= 0:
            fixes.append(f"use --start {total - 1 - stride} or less")
    raise UsageError(f"--start {start} --stride {stride}{'' if max_frames is None else f' --max-frames {max_frames}'} "
                     f"select {selected} frame of the video's {total}; D4RT needs at least 2: {' or '.join(fixes)}")


def write_marker(folder: Path, command: str | None = None) -> Path:
    """Write ``folder/.d4rt-output.json``: {"command": the command line, "time", "d4rt_version"}."""
    import datetime
    import json
    import shlex
    import sys

    from d4rt import __version__

    record = {
        "command": command or " ".join(["d4rt", *map(shlex.quote, sys.argv[1:])]),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "d4rt_version": __version__,
    }
    path = folder / MARKER
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def command_line(args) -> str:
    """The command line that parsed ``args`` ("d4rt infer clip.mp4 --export E --out R"), for the output record."""
    return getattr(args, "command_line", None) or f"d4rt {getattr(args, 'command', '')}".strip()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
