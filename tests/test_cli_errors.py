"""A user error on the command line is one line on stderr naming the problem and the fix, with exit status 2 for
a bad command line and 1 for a failed run; the traceback only with --debug. Nothing is left behind in --out.

Each case runs the real ``d4rt`` command in a subprocess, as a user would.
"""


import pytest

from tests.cli_run import assert_one_line, d4rt
from tests.exported import exported


@pytest.fixture(scope="module")
def engines():
    return exported("tiny", 4, "fp32")[1]


def test_export_usage_errors(tmp_path):
    out = tmp_path / "out"
    assert_one_line(d4rt("export", "ckpt", "--random-init", "--preset", "tiny", "--out", out), 2,
                    "either a checkpoint directory or --random-init")
    assert_one_line(d4rt("export", "--random-init", "--out", out), 2, "--random-init needs --preset")
    (tmp_path / "file").write_text("x")
    assert_one_line(d4rt("export", "--random-init", "--preset", "tiny", "--out", tmp_path / "file"), 2, "is a file")
    assert_one_line(d4rt("export", tmp_path / "nowhere", "--out", out), 1, "does not exist")
    assert not out.exists()


def test_argparse_errors_are_one_line_too(tmp_path):
    assert_one_line(d4rt("occupancy"), 2, "required", "--help")
    assert_one_line(d4rt("no-such-command"), 2, "invalid choice")


def test_debug_shows_the_traceback(tmp_path):
    result = d4rt("--debug", "export", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert result.returncode == 1 and "Traceback" in result.stderr
    import os

    result = d4rt("export", tmp_path / "nowhere", "--out", tmp_path / "o", env={**os.environ, "D4RT_DEBUG": "1"})
    assert "Traceback" in result.stderr


def test_an_existing_out_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "engines"
    out.mkdir()
    (out / "old.txt").write_text("an earlier run")
    argv = ["export", "--random-init", "--preset", "tiny", "--frames", "2", "--image-size", "32", "--out", out]
    assert_one_line(d4rt(*argv), 2, "exists and is not empty", "--overwrite")
    assert_one_line(d4rt(*argv, "--overwrite"), 2, "not written by d4rt")  # not d4rt's: never replaced
    assert (out / "old.txt").read_text() == "an earlier run"
    (out / ".d4rt-output.json").write_text("{}")  # as an earlier d4rt command leaves it
    result = d4rt(*argv, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "old.txt" not in {p.name for p in out.iterdir()} and (out / "manifest.json").is_file()  # replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["engines"]  # no temporary folder left beside it


def test_snake_case_flags_are_aliases(engines):
    from d4rt.cli import kebab_flags

    assert kebab_flags(["--max_frames", "3", "--img_size=32", "a_b", "-x"]) == ["--max-frames", "3", "--image-size=32",
                                                                                 "a_b", "-x"]
    # the seed's spelling reaches the same flag: its value shows up in the refusal
    assert_one_line(d4rt("build-engine", engines, "--min_queries", "5", "--opt_queries", "2"), 2, "got 5, 2, 65536")


def test_engines_is_a_deprecated_alias_of_export(tmp_path, capsys):
    from d4rt.cli import main

    missing, video = str(tmp_path / "missing"), tmp_path / "v.npy"
    video.write_bytes(b"")
    for argv in (["bench", "--engines", missing], ["bench", f"--engines={missing}"],
                 ["infer", str(video), "--engines", missing, "--out", missing]):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        # one warning line that names the new flag, then the refusal, which reached --export's own check
        assert err[0] == f"d4rt {argv[0]}: warning: --engines is deprecated and goes in the next release; use --export"
        assert len(err) == 2 and f"--export {missing} is not" in err[1], err
    assert main(["bench", "--export", missing]) == 2
    assert "warning" not in capsys.readouterr().err


def test_help_shows_defaults():
    out = " ".join(d4rt("occupancy", "--help").stdout.split())
    assert "(default: 0.05)" in out and "(default: 65536)" in out and "(default: None)" not in out
