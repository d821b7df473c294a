"""Running the real ``d4rt`` command as a user would, and the one-line error contract its tests check."""

from __future__ import annotations

import subprocess
import sys


def d4rt(*argv, cwd=None, env=None, prelude: str | None = None) -> subprocess.CompletedProcess:
    """``d4rt ARGV`` in a fresh interpreter (stdout / stderr captured as text); ``prelude`` is Python run first
    (e.g. to hide an installed package)."""
    if prelude is None:
        command = [sys.executable, "-m", "d4rt.cli"]
    else:
        command = [sys.executable, "-c", f"import sys\n{prelude}\nfrom d4rt.cli import main\nsys.exit(main())"]
    return subprocess.run([*command, *map(str, argv)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *words: str, absent=()) -> str:
    """Exit status ``code`` and one line on stderr, no traceback, holding every word and none of ``absent``."""
    err = result.stderr.strip()
    assert result.returncode == code, (result.returncode, err, result.stdout)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    for w in absent:
        assert w not in err, (w, err)
    return err
