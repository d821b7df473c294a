"""The messages of issue #24 (section 2) that did not say what to do: each case runs the real ``d4rt`` command in a
subprocess, as a user would, and gets one line naming the problem and the fix (no traceback, no FFmpeg noise).

The occupancy cases (no matplotlib, a clip longer than the engines' T, --grid) are in tests/test_occupancy_cli.py.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_run import assert_one_line, d4rt
from tests.exported import small_export
from tests.test_cli_overwrite import write_mp4

REPO = Path(__file__).resolve().parent.parent


one_line = assert_one_line


@pytest.fixture(scope="module")
def export_dir():
    return small_export()[1]


@pytest.fixture
def clip(tmp_path):
    return write_mp4(tmp_path / "clip.mp4")


def edited_export(export_dir: Path, tmp_path: Path, **fields) -> Path:
    copy = Path(shutil.copytree(export_dir, tmp_path / "edited"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(fields)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("field, value, words", [
    ("image_size", 48, ["'image_size' is 48", "exported for 16 x 16", "re-export"]),  # was: Got invalid dimensions
    ("num_frames", "sixteen", ["'num_frames' must be an integer", '"sixteen"', "re-export"]),  # was: int() ...
])
def test_an_edited_manifest_names_the_field_and_says_re_export(export_dir, tmp_path, clip, field, value, words):
    edited = edited_export(export_dir, tmp_path, **{field: value})
    one_line(d4rt("infer", clip, "--export", edited, "--out", tmp_path / "o"), 1, *words,
             absent=("invalid dimensions", "invalid literal"))
    assert not (tmp_path / "o").exists()


def test_out_dot_and_dot_dot(export_dir, tmp_path, clip):
    # was: `PosixPath('.') has an empty name` and `OSError: [Errno 16] Device or resource busy`
    work = tmp_path / "work"
    work.mkdir()
    one_line(d4rt("infer", clip, "--export", export_dir, "--out", ".", cwd=work), 2,
             "--out . is the current folder", "name a new folder")
    one_line(d4rt("infer", clip, "--export", export_dir, "--out", "..", cwd=work), 2,
             "--out .. is a folder that holds the current folder", "name a new folder")


def test_a_folder_given_as_the_video(export_dir, tmp_path):
    (tmp_path / "adir.mp4").mkdir()  # was: `video adir.mp4 does not exist`
    one_line(d4rt("infer", tmp_path / "adir.mp4", "--export", export_dir, "--out", tmp_path / "o"), 2,
             "is a folder, not a video file", "give a video file", absent=("does not exist",))


def test_a_one_frame_clip_gets_no_advice_it_cannot_follow(export_dir, tmp_path):
    np.save(tmp_path / "one.npy", np.random.default_rng(0).integers(0, 256, (1, 24, 32, 3), dtype=np.uint8))
    for video in (tmp_path / "one.npy", write_mp4(tmp_path / "one.mp4", frames=1)):
        one_line(d4rt("infer", video, "--export", export_dir, "--out", tmp_path / "o"), 2,
                 "has 1 frame", "at least 2 frames", absent=("--stride", "--start"))
    # where a flag can be lowered, the advice names the value that works
    three = write_mp4(tmp_path / "three.mp4", frames=3)
    one_line(d4rt("infer", three, "--export", export_dir, "--out", tmp_path / "o", "--stride", "5"), 2,
             "select 1 frame of the video's 3", "use --stride 2 or less", absent=("--start 0 or",))
    one_line(d4rt("infer", three, "--export", export_dir, "--out", tmp_path / "o", "--start", "2"), 2,
             "use --start 1 or less", absent=("use --stride",))


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 20])
def test_a_file_that_is_not_a_video_gives_one_line_without_ffmpeg_noise(export_dir, tmp_path, content):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(content)  # was: two FFmpeg "moov atom not found" lines before our message
    err = one_line(d4rt("infer", fake, "--export", export_dir, "--out", tmp_path / "o"), 2, "fake.mp4",
                   absent=("moov", "mov,mp4"))
    assert ("is empty (0 bytes)" in err) if not content else ("cannot be decoded" in err and "ffmpeg -i" in err)


def test_export_without_torch_says_which_install(tmp_path):
    # the runtime-only install has no torch: was `No module named 'torch'`
    result = d4rt("export", "--random-init", "--preset", "tiny", "--out", tmp_path / "e",
                  prelude="sys.modules['torch'] = None  # as if not installed")
    one_line(result, 1, "'torch'", "not installed", 'pip install -c constraints.txt -e ".[export]"')
    assert not (tmp_path / "e").exists()


def test_import_d4rt_runtime_from_the_repository_root_after_a_plain_install():
    # `pip install ".[runtime]"` (not editable) then `python -c "import d4rt.runtime"` in the repository root: the
    # source folder d4rt/ comes first on sys.path and used to hide the installed d4rt.runtime. Simulated by removing
    # the editable install's finder, so the source folder alone must answer.
    code = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in (getattr(f, '__name__', '') or type(f).__module__)]
sys.path_hooks[:] = [h for h in sys.path_hooks if 'editable' not in getattr(h, '__module__', '')]
sys.path_importer_cache.clear()
sys.path.insert(0, '')
import d4rt.runtime, d4rt.occupancy
from d4rt.runtime import load
print(d4rt.runtime.__file__)
assert 'torch' not in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO / "runtime" / "__init__.py"
