"""``d4rt occupancy`` end to end through the real runtime: the bundled sample clip, the bundled checkpoint exported
by ``d4rt export`` (4 frames, to keep it fast) and ONNX Runtime on the CPU. The files the command writes are read
back and checked against the runtime queried directly and a brute-force ray caster (tests/occupancy_scenes.py)."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from d4rt.cli import main
from d4rt.runtime import load
from d4rt.runtime.geometry import focal_from_points, grid_uv
from d4rt.occupancy.io import load_occupancy
from tests.occupancy_scenes import reference_cast

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = ROOT / "assets" / "sample_clip.mp4"
CHECKPOINT = ROOT / "checkpoints" / "tiny-synthetic"
FRAMES, GRID, POSE_GRID = 4, 12, 8  # a 4-frame export; 12 x 12 point maps keep the brute-force check small


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """`d4rt export checkpoints/tiny-synthetic --frames 4`: the bundled model (a random one gives point maps that
    fit no pinhole camera, which the command refuses)."""
    out = tmp_path_factory.mktemp("occupancy") / "engines"
    assert main(["export", str(CHECKPOINT), "--frames", str(FRAMES), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def direct(engines):
    """The runtime queried directly, as the command should: the first FRAMES frames of the sample clip (one
    window), posed as `d4rt infer` poses them (the windows' estimator)."""
    rt = load(engines, backend="onnxruntime-cpu")
    scene = rt.encode(SAMPLE_CLIP, max_frames=FRAMES)
    uv = grid_uv(GRID)
    answers = [rt.query(scene, uv, t, t, t) for t in range(FRAMES)]
    return {
        "T_wc": rt.encode_video(SAMPLE_CLIP, max_frames=FRAMES, pose_size=POSE_GRID).T_wc,
        "xyz": np.stack([a["xyz"] for a in answers]).astype(np.float64),  # [T, GRID^2, 3], camera t
        "confidence": np.stack([a["confidence"] for a in answers]),
        "uv": uv,
        "S": scene.image_size,
    }


def occupancy_command(engines, out, voxel, *extra):
    return main(
        [
            "occupancy",
            str(SAMPLE_CLIP),
            "--export",
            str(engines),
            "--out",
            str(out),
            "--voxel",
            f"{voxel!r}",
            "--max-frames",
            str(FRAMES),
            "--depth-size",
            str(GRID),
            "--pose-size",
            str(POSE_GRID),
            "--backend",
            "onnxruntime-cpu",
            *extra,
        ]
    )


def test_occupancy_command_on_the_sample_clip(engines, direct, tmp_path, capsys):
    T_wc, conf = direct["T_wc"], direct["confidence"]
    keep = conf >= 0.5
    assert 0 < keep.sum() and 0 < conf.min() and conf.max() < 1  # probabilities, some points kept
    points = [direct["xyz"][t][keep[t]] @ T_wc[t, :3, :3].T + T_wc[t, :3, 3] for t in range(FRAMES)]
    everything = np.concatenate([T_wc[:, :3, 3], *points])
    voxel = float(np.ptp(everything, 0).max() / 10)  # about 10 voxels across whatever scale the model predicts

    out = tmp_path / "occ"
    assert occupancy_command(engines, out, voxel, "--ply", "last") == 0
    captured = capsys.readouterr()
    assert f"{FRAMES} frames of {SAMPLE_CLIP} (256 x 192) encoded at 128 x 128 on onnxruntime-cpu in 1 window" \
        in captured.out
    assert "ray casting" in captured.err  # progress bar

    occ = load_occupancy(out / "occupancy.npz")
    assert occ.num_frames == FRAMES and occ.grid.voxel_size == voxel and occ.metric_scale == 1.0
    np.testing.assert_allclose(occ.T_wc, T_wc, atol=1e-6)
    for t in range(FRAMES):
        K = focal_from_points(direct["uv"], direct["xyz"][t], direct["S"])
        np.testing.assert_allclose(occ.K[t], K, rtol=1e-6)
    # the grid: voxel centres on voxel * Z^3, the smallest such box around every point and camera
    lo = np.floor(everything.min(0) / voxel + 0.5)
    hi = np.floor(everything.max(0) / voxel + 0.5)
    np.testing.assert_allclose(occ.grid.origin, (lo - 0.5) * voxel, rtol=1e-12, atol=1e-12)
    assert occ.grid.shape == tuple(int(n) for n in hi - lo + 1)
    for t in range(FRAMES):  # every voxel of every frame, against a slab test on every voxel-ray pair
        occupied, free = reference_cast(occ.grid.origin, voxel, occ.grid.shape, T_wc[t, :3, 3], points[t])
        np.testing.assert_array_equal(occ.occupied[t], occupied)
        np.testing.assert_array_equal(occ.free[t], free)
        assert len(free) > 0

    assert sorted(p.name for p in (out / "ply").iterdir()) == [f"frame_{FRAMES - 1:04d}.ply"]
    assert (out / "bev.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "onnxruntime-cpu" and summary["depth_size"] == GRID and summary["frames"] == FRAMES
    assert summary["occupied_per_frame"] == [len(a) for a in occ.occupied]
    assert summary["free_per_frame"] == [len(a) for a in occ.free]


def test_occupancy_command_window_mode(engines, tmp_path):
    args = ("--ply", "none", "--no-plot")
    assert occupancy_command(engines, tmp_path / "a", 0.1, *args) == 0
    assert occupancy_command(engines, tmp_path / "b", 0.1, *args, "--window", "2") == 0
    a, b = load_occupancy(tmp_path / "a" / "occupancy.npz"), load_occupancy(tmp_path / "b" / "occupancy.npz")
    assert a.grid.same_as(b.grid)
    np.testing.assert_array_equal(b.occupied[0], a.occupied[0])
    for t in range(1, FRAMES):
        np.testing.assert_array_equal(b.occupied[t], np.union1d(a.occupied[t - 1], a.occupied[t]))
    assert not (tmp_path / "a" / "bev.png").exists() and not (tmp_path / "a" / "ply").exists()


def test_occupancy_command_bad_input(engines, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    out = str(tmp_path / "o")

    def refused(argv, message, code=2):
        assert main(argv) == code
        err = capsys.readouterr().err
        assert re.search(message, err) and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err

    refused(["occupancy", str(video), "--export", str(engines), "--out", out], "no video")
    refused(["occupancy", str(SAMPLE_CLIP), "--export", str(tmp_path / "none"), "--out", out], "no export folder")
    base = ["occupancy", str(SAMPLE_CLIP), "--export", str(engines), "--out", out]
    refused(base + ["--voxel", "0"], "--voxel must be a positive")
    refused(base + ["--pose-size", "1"], "--pose-size must be at least 2")
    refused(base + ["--depth-size", "1"], "--depth-size must be at least 2")
    with pytest.raises(SystemExit):  # argparse: the two temporal modes exclude each other
        main(base + ["--smooth", "1", "--window", "3"])
    assert not (tmp_path / "o").exists()


def test_occupancy_runs_a_long_clip_in_windows_without_matplotlib(engines, tmp_path, capsys, monkeypatch):
    """Issue #24: a clip longer than the engines' T runs in aligned windows, as `d4rt infer` does (the same
    windows code: its poses are encode_video's); without matplotlib the top view is skipped with a note; the old
    --grid and --pose-grid still work (a warning each) and --grid means the point map's queries per side, not the voxel grid."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as when not installed
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    frames = 6  # 16-frame sample clip, 4-frame engines: two windows
    out = tmp_path / "occ"
    argv = ["occupancy", str(SAMPLE_CLIP), "--export", str(engines), "--out", str(out), "--voxel", "0.2",
            "--max-frames", str(frames), "--grid", "8", "--pose-grid", str(POSE_GRID), "--backend", "onnxruntime-cpu",
            "--ply", "none"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "--grid is deprecated" in captured.err and "--pose-grid is deprecated" in captured.err and "no bev.png: `pip install matplotlib`" in captured.out
    assert not (out / "bev.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    video = load(engines, backend="onnxruntime-cpu").encode_video(SAMPLE_CLIP, max_frames=frames, pose_size=POSE_GRID)
    assert len(video.windows) > 1 and summary["windows"] == [[r.start, r.stop - 1] for r in video.windows]
    assert summary["frames"] == frames and summary["depth_size"] == 8 and summary["bev_png"] is False
    occ = load_occupancy(out / "occupancy.npz")
    np.testing.assert_allclose(occ.T_wc, video.T_wc, atol=1e-9)
    # every frame's occupied voxels are its own point map's (its own camera, the video's scale), posed
    scene_scale = np.array([np.cbrt(np.linalg.det(video.world_from_window[w][:3, :3])) for w in video.owner])
    for t in (0, frames - 1):
        window = video.windows[video.owner[t]]
        rt = load(engines, backend="onnxruntime-cpu")
        scene = rt.encode(SAMPLE_CLIP, start=window.start, max_frames=len(window))
        answer = rt.query(scene, grid_uv(8), t - window.start, t - window.start, t - window.start)
        keep = answer["confidence"] >= 0.5
        xyz = answer["xyz"][keep].astype(np.float64) * scene_scale[t]
        world = xyz @ video.T_wc[t, :3, :3].T + video.T_wc[t, :3, 3]
        voxels = np.unique(np.floor((world - occ.grid.origin) / occ.grid.voxel_size).astype(np.int64), axis=0)
        np.testing.assert_array_equal(occ.occupied[t], np.sort(occ.grid.flat_index(voxels)))
