"""Every Python and shell snippet in README.md and docs/*.md runs, so the docs cannot drift from the code.

Fenced blocks tagged ``python`` run in order in one namespace per page; blocks tagged ``bash`` / ``sh`` / ``shell``
run in bash (``set -euo pipefail``) with the venv's bin first on PATH. A page runs in a fresh scratch folder that
holds links to the repository's top-level entries (checkpoints, assets, scripts, ...), so relative paths in the
docs work and what the snippets write stays out of the checkout. A block right after a line
``<!-- skip: REASON -->`` is skipped with that reason (a GPU, TensorRT); ``text`` / ``console`` blocks are output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*skip:\s*(.*?)\s*-->\s*$")
RUN = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}


def blocks(page: Path) -> list[tuple[str, str, int, str | None]]:
    """(kind, code, line, skip reason) of every runnable fenced block of a page."""
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        kind = RUN.get(m.group(1).lower())
        if kind is None:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        found.append((kind, m.group(2), text[: m.start()].count("\n") + 1, skip.group(1) if skip else None))
    return found


def scratch(tmp_path: Path) -> Path:
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


def test_every_page_has_its_blocks_found():
    assert blocks(ROOT / "README.md"), "the README's snippets were not found"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_snippets_run(page, tmp_path, monkeypatch):
    found = blocks(page)
    runnable = [b for b in found if b[3] is None]
    if not runnable:
        pytest.skip(f"{page.name}: no runnable snippet ({len(found)} skipped)")
    cwd = scratch(tmp_path)
    monkeypatch.chdir(cwd)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg"}
    namespace: dict = {"__name__": "__docs__"}
    for kind, code, line, _ in runnable:
        where = f"{page.relative_to(ROOT)}:{line}"
        if kind == "python":
            try:
                exec(compile(code, where, "exec"), namespace)
            except Exception as e:  # noqa: BLE001 - name the block that failed
                raise AssertionError(f"the python block at {where} failed: {type(e).__name__}: {e}") from e
        else:
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                                    text=True, timeout=900)
            assert result.returncode == 0, (
                f"the bash block at {where} failed (exit {result.returncode}):\n{code}\n--- stderr ---\n"
                f"{result.stderr[-3000:]}\n--- stdout ---\n{result.stdout[-2000:]}"
            )
