"""`d4rt infer` on whole videos with nothing but --export and --out (ONNX Runtime CPU): a 200-frame rendered video
in aligned windows, a 7-frame one (odd, shorter than T), and every argument error as one line before any work."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from d4rt.cli import main
from d4rt.runtime import load
from tests.exported import small_export
from d4rt.data.oracle_video import render
from tests.onnx_reference import OnnxReference, grid


@pytest.fixture(scope="module")
def engines():
    return small_export()[1]


def test_200_frames_in_windows(engines, tmp_path, capsys):
    clip = render(200, seed=int(np.random.default_rng(np.random.randint(2**31)).integers(1 << 30)))
    np.save(tmp_path / "video.npy", clip.rgb)
    out = tmp_path / "result"
    assert main(["infer", str(tmp_path / "video.npy"), "--export", str(engines), "--out", str(out)]) == 0
    assert "frames 0..199 (200) in 33 window(s) on onnxruntime-cpu" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"{f:04d}.png" for f in range(200)]
    trajectory = json.loads((out / "trajectory.json").read_text())
    T_wc = np.array(trajectory["T_wc"])
    assert T_wc.shape == (200, 4, 4) and np.isfinite(T_wc).all() and np.allclose(T_wc[0], np.eye(4))
    R = T_wc[:, :3, :3]
    assert np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max() < 1e-5  # rigid poses in the world
    assert len(trajectory["windows"]) == 33 and trajectory["windows"][-1] == [192, 199]
    depth = np.load(out / "depth.npz")["depth"]
    assert depth.shape == (200, 16, 16) and np.isfinite(depth).all()
    tracks = np.load(out / "tracks.npz")
    assert tracks["xyz"].shape == (256, 200, 3) and np.isfinite(tracks["xyz"]).all()  # across every window
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 200 and summary["windows"] == 33 and summary["original_size"] == [24, 32]

    # against the graphs run by ONNX Runtime directly (tests/onnx_reference.py), window by window: window 0
    # (frames 0..7) is the world, so its depth and its tracks (from frame 0, in camera 0) are its raw answers
    # (the same graph on the same inputs: measured equal, 0; 1e-5 allows other batch splits)
    ref = OnnxReference(engines)
    uv = grid(16)
    ref.encode(clip.rgb[0:8], 32 / 24)
    for f in range(8):
        z = ref.query(uv, f, f, f)["xyz"][:, 2].reshape(16, 16)
        np.testing.assert_allclose(depth[f], z, rtol=1e-5, atol=1e-6 * np.abs(z).max())
        np.testing.assert_allclose(tracks["xyz"][:, f], ref.query(uv, 0, f, 0)["xyz"], rtol=1e-5, atol=1e-5)
    # window 1 (frames 6..13) answers frames 8..13, scaled into the world by one factor s > 0: depth = s * its raw
    # depth at every pixel of those frames (float32 depths times a float64 s: measured 3.6e-8 of the largest depth;
    # 1e-5 allows 300x)
    ref.encode(clip.rgb[6:14], 32 / 24)
    raw = np.stack([ref.query(uv, f, f, f)["xyz"][:, 2].reshape(16, 16) for f in range(2, 8)]).astype(np.float64)
    s = float(np.sum(depth[8:14] * raw) / np.sum(raw * raw))
    assert s > 0 and np.abs(depth[8:14] - s * raw).max() < 1e-5 * np.abs(depth[8:14]).max()


def write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_7_frames_every_frame_answered(engines, tmp_path, capsys):
    clip = render(7, seed=int(np.random.default_rng(np.random.randint(2**31)).integers(1 << 30)), height=36, width=48)
    video = write_video(tmp_path / "clip.avi", clip.rgb)
    out = tmp_path / "result"
    assert main(["infer", str(video), "--export", str(engines), "--out", str(out)]) == 0
    assert "frames 0..6 (7) in 2 window(s)" in capsys.readouterr().out
    assert len(list((out / "depth").iterdir())) == 7
    depth = np.load(out / "depth.npz")["depth"]
    rt = load(engines)
    first = rt.depth(rt.encode(video, max_frames=6))  # frames 0..5 are window 0's: the world is its camera 0
    np.testing.assert_allclose(depth[:6], first, rtol=1e-5, atol=1e-6)
    assert np.isfinite(depth[6]).all() and (depth[6] != 0).any()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--stride", "0"], "argument --stride: invalid positive_int value: '0'"),
        (["--batch-size", "0"], "argument --batch-size: invalid positive_int value: '0'"),
        (["--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
        (["--start", "100"], "--start 100 is beyond the video's 5 frames"),
        (["--depth-size", "-1"], "argument --depth-size: invalid grid_size value: '-1'"),
        (["--pose-size", "1"], "argument --pose-size: invalid grid_size value: '1'"),
        (["--start", "4"], "select 1 frame of the video's 5; D4RT needs at least 2: use --start 3 or less"),
        (["--window", "4", "--overlap", "4"], "--overlap 4 must be smaller than --window 4"),
    ],
)
def test_bad_arguments_are_one_line(engines, tmp_path, capsys, extra, match):
    np.save(tmp_path / "v.npy", np.zeros((5, 8, 8, 3), np.uint8))
    try:  # argparse's own errors exit, validate's return 2: both before the engines load
        code = main(["infer", str(tmp_path / "v.npy"), "--export", str(engines), "--out", str(tmp_path / "o"),
                     *extra])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_errors_in_a_subprocess_and_nothing_left(engines, tmp_path):
    """The real command line: one line, no traceback, exit 2 (usage) / 1 (failed run); no partial --out."""
    np.save(tmp_path / "v.npy", np.random.randint(0, 256, (4, 8, 8, 3), np.uint8))
    (tmp_path / "file").write_text("x")
    bad = np.full((4, 8, 8, 3), np.nan, np.float32)
    np.save(tmp_path / "nan.npy", bad)
    cases = [
        (["v.npy", "--out", "file"], 2, "--out file is a file"),
        (["v.npy", "--out", "o", "--stride", "0"], 2, "invalid positive_int"),
        (["nan.npy", "--out", "o"], 1, "NaN or infinite"),  # fails inside the run: nothing is left behind
    ]
    for args, code, message in cases:
        run = subprocess.run([sys.executable, "-c", "import sys; from d4rt.cli import main; sys.exit(main())", "infer", *args, "--export", str(engines)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert run.returncode == code, run.stderr
        assert "Traceback" not in run.stderr and message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
