"""``--overwrite`` replaces only a folder that d4rt itself wrote (issue #24, section 1).

Every refusal is one line, exit 2, and keeps every file: the two commands of the trial that deleted a user's video
and an export folder, a folder without d4rt's record, `.`, `..`, the home folder, the repository, an ancestor of
the current folder. A folder an earlier d4rt command wrote is still replaced whole.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.cli_run import assert_one_line, d4rt
from tests.exported import small_export

REPO = Path(__file__).resolve().parent.parent


def assert_refused(result, *words):
    assert_one_line(result, 2, *words)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_mp4(path: Path, frames: int = 6, seed: int = 0) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 24))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def export_dir():
    return small_export()[1]


def test_out_holding_the_input_video_is_refused_and_kept(tmp_path, export_dir):
    # d4rt infer sand/apple2.mp4 --export E --out sand --overwrite  (the trial deleted the video and notes.txt)
    write_mp4(tmp_path / "sand" / "apple2.mp4")
    (tmp_path / "sand" / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path / "sand")
    result = d4rt("infer", "sand/apple2.mp4", "--export", export_dir, "--out", "sand", "--overwrite", cwd=tmp_path)
    assert_refused(result, "--out sand contains sand/apple2.mp4", "input")
    assert snapshot(tmp_path / "sand") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sand"]  # no temporary folder beside it


def test_out_that_is_the_export_folder_is_refused_and_kept(tmp_path, export_dir):
    # d4rt infer apple2.mp4 --export eng_copy --out eng_copy --overwrite  (the trial deleted the graphs + manifest)
    write_mp4(tmp_path / "apple2.mp4")
    shutil.copytree(export_dir, tmp_path / "eng_copy")
    before = snapshot(tmp_path / "eng_copy")
    assert {"encoder.onnx", "decoder.onnx", "manifest.json"} <= set(before)
    result = d4rt("infer", "apple2.mp4", "--export", "eng_copy", "--out", "eng_copy", "--overwrite", cwd=tmp_path)
    assert_refused(result, "--out eng_copy is eng_copy", "input")
    assert snapshot(tmp_path / "eng_copy") == before
    # the same with a d4rt record in it: an input is never replaced, record or not
    (tmp_path / "eng_copy" / ".d4rt-output.json").write_text("{}")
    assert_refused(d4rt("infer", "apple2.mp4", "--export", "eng_copy", "--out", "eng_copy", "--overwrite",
                        cwd=tmp_path), "is eng_copy")
    assert {"encoder.onnx", "decoder.onnx", "manifest.json"} <= {p.name for p in (tmp_path / "eng_copy").iterdir()}


def test_a_folder_d4rt_did_not_write_is_refused_and_kept(tmp_path, export_dir):
    write_mp4(tmp_path / "clip.mp4")
    (tmp_path / "mine" / "sub").mkdir(parents=True)
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "mine" / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(tmp_path / "mine")
    result = d4rt("infer", "clip.mp4", "--export", export_dir, "--out", "mine", "--overwrite", cwd=tmp_path)
    assert_refused(result, "not written by d4rt", ".d4rt-output.json", "new folder")
    assert snapshot(tmp_path / "mine") == before


@pytest.mark.parametrize("out", [".", ".."])
def test_the_current_folder_and_its_parent_are_refused(tmp_path, export_dir, out):
    # the trial: `--out ..` -> OSError [Errno 16]; `--out .` -> "PosixPath('.') has an empty name"
    work = tmp_path / "work"
    write_mp4(work / "clip.mp4")
    (work / "notes.txt").write_text("my notes")
    (work / ".d4rt-output.json").write_text("{}")  # even a folder that looks like d4rt's is never replaced
    before = snapshot(tmp_path)
    result = d4rt("infer", "clip.mp4", "--export", export_dir, "--out", out, "--overwrite", cwd=work)
    assert_refused(result, f"--out {out} is", "name a new folder")
    assert snapshot(tmp_path) == before


def test_a_folder_d4rt_wrote_is_replaced_whole(tmp_path, export_dir):
    write_mp4(tmp_path / "clip.mp4")
    argv = ["infer", "clip.mp4", "--export", export_dir, "--out", "results", "--depth-size", "8"]
    first = d4rt(*argv, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    record = json.loads((tmp_path / "results" / ".d4rt-output.json").read_text())
    assert record["command"].startswith("d4rt infer clip.mp4") and record["time"] and record["d4rt_version"]
    assert_refused(d4rt(*argv, cwd=tmp_path), "exists and is not empty", "--overwrite")
    (tmp_path / "results" / "stale.txt").write_text("from the first run")
    second = d4rt(*argv, "--overwrite", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    names = {p.name for p in (tmp_path / "results").iterdir()}
    assert "stale.txt" not in names and {"depth.npz", "trajectory.json", ".d4rt-output.json"} <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "results"]


def test_export_refuses_to_replace_its_checkpoint(tmp_path, export_dir):
    ckpt = Path(shutil.copytree(export_dir / "checkpoint", tmp_path / "ckpt"))
    (ckpt / ".d4rt-output.json").write_text("{}")
    before = snapshot(ckpt)
    assert_refused(d4rt("export", ckpt, "--out", ckpt, "--overwrite"), "is", "an input of this command")
    assert_refused(d4rt("export", ckpt, "--out", tmp_path, "--overwrite"), "contains", "an input of this command")
    assert snapshot(ckpt) == before


def test_occupancy_and_demo_refuse_a_folder_they_did_not_write(tmp_path, export_dir):
    clip = write_mp4(tmp_path / "in" / "clip.mp4")
    before = snapshot(tmp_path)
    assert_refused(d4rt("occupancy", clip, "--export", export_dir, "--out", tmp_path / "in", "--overwrite",
                        "--no-plot"), "contains", "an input of this command")
    (tmp_path / "demo_here").mkdir()
    (tmp_path / "demo_here" / "notes.txt").write_text("mine")
    result = d4rt("demo", "--out", tmp_path / "demo_here")  # the demo always replaces its own folder
    assert result.returncode == 2 and "not written by d4rt" in result.stderr, result.stderr
    assert snapshot(tmp_path) == {**before, "demo_here/notes.txt": b"mine"}
    # d4rt view --record: never into the results folder it shows
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.json").write_text("{}")
    assert_refused(d4rt("view", tmp_path / "results", "--record", tmp_path / "results", "--overwrite"),
                   "is", "an input of this command")
    assert (tmp_path / "results" / "summary.json").read_text() == "{}"


def test_check_output_refuses_home_root_repository_and_ancestors(tmp_path, monkeypatch):
    from d4rt.cli.common import UsageError, check_output

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "file").write_text("x")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    marked = tmp_path / "elsewhere"
    (marked / ".git").mkdir(parents=True)
    (marked / ".d4rt-output.json").write_text("{}")
    cases = {
        "/": "the root folder",
        str(tmp_path / "a"): "a folder that holds the current folder",
        str(tmp_path): "a folder that holds the current folder",
        ".": "the current folder",
        str(REPO): "the d4rt repository",
        str(marked): "a git repository",
    }
    for out, words in cases.items():
        with pytest.raises(UsageError, match=words):
            check_output(out, overwrite=True)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="your home folder"):
        check_output(tmp_path / "a", overwrite=True)
    # the repository's own source folders (the docs once wrote an export to `--out export/`, the package's folder)
    for folder in ("export", "runtime", "d4rt"):
        with pytest.raises(UsageError, match="not written by d4rt"):
            check_output(REPO / folder, overwrite=True)
    # a symlink to an input is the input
    os.symlink(work, tmp_path / "link")
    with pytest.raises(UsageError, match="an input of this command"):
        check_output(tmp_path / "link", overwrite=True, inputs=[work / "file"])
    # a new folder, an empty folder and a marked one are fine
    (tmp_path / "empty").mkdir()
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / ".d4rt-output.json").write_text("{}")
    (tmp_path / "done" / "depth.npz").write_bytes(b"x")
    for out in ("new", tmp_path / "empty", tmp_path / "done"):
        assert check_output(out, overwrite=True, inputs=[None, work / "file"]) == Path(out)
