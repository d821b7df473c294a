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
from typing import Iterator


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
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")


def check_output(out: str | Path, overwrite: bool) -> Path:
    """Refuse an --out that is a file, or a non-empty folder without --overwrite (before any work is done)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} exists and is not empty; pass --overwrite to replace it, or name a new folder")
    return out


@contextlib.contextmanager
def output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on success it replaces ``out`` whole, on error it is removed.

    >>> with output_dir("results/", overwrite=True) as tmp:
    ...     (tmp / "depth.npz").write_bytes(b"...")
    """
    out = check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
