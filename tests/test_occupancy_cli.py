"""``d4rt occupancy`` end to end, with d4rt.runtime.load answered by an analytic scene (the engines cannot be
built in CI): the files it writes are read back and checked against ground truth."""

import json

import numpy as np
import pytest

import d4rt.runtime
from d4rt.cli import main
from d4rt.runtime.occupancy import ground_truth_occupancy
from d4rt.runtime.occupancy_io import load_occupancy
from d4rt.runtime.occupancy_metrics import occupancy_scores
from tests.occupancy_scenes import AnalyticRuntime, intrinsics, pose, render_clip, rotation_y


@pytest.fixture
def analytic_runtime(monkeypatch):
    rng = np.random.default_rng()
    S, T = 32, 3
    K = intrinsics(S, 26.0)
    T_wc = np.stack([pose(rotation_y(0.05 * t), (0.05 * t, 0.0, 0.0)) for t in range(T)])
    boxes = [[(np.array([-0.5 + 0.3 * t, -0.3, 1.4]), np.array([0.0 + 0.3 * t, 0.3, 1.9]))] for t in range(T)]
    planes = [(2, 2.6 + rng.uniform(-0.02, 0.02))]
    rt = AnalyticRuntime(K, T_wc, boxes, planes, S)
    loads = []

    def load(path, backend="auto"):
        loads.append((str(path), backend))
        return rt

    monkeypatch.setattr(d4rt.runtime, "load", load, raising=False)
    return rt, loads, render_clip(K, T_wc, S, boxes, planes)[1]


def test_cli_writes_occupancy(tmp_path, analytic_runtime, capsys):
    rt, loads, depth = analytic_runtime
    video, engines, out = tmp_path / "clip.mp4", tmp_path / "engines", tmp_path / "out"
    video.write_bytes(b"not read by the analytic runtime")
    engines.mkdir()
    code = main(
        [
            "occupancy",
            str(video),
            "--engines",
            str(engines),
            "--out",
            str(out),
            "--voxel",
            "0.1",
            "--ply",
            "last",
        ]
    )
    assert code == 0 and loads == [(str(engines), "auto")]
    occ = load_occupancy(out / "occupancy.npz")
    assert occ.num_frames == 3 and occ.grid.voxel_size == 0.1
    np.testing.assert_array_equal(occ.T_wc, rt.T_wc)
    gt = ground_truth_occupancy(depth, rt.K, rt.T_wc, voxel_size=0.1)
    assert gt.grid.same_as(occ.grid)  # the same points and cameras size the same lattice-aligned grid
    assert occupancy_scores(occ, gt).clip["iou"] > 0.99
    assert sorted(p.name for p in (out / "ply").iterdir()) == ["frame_0002.ply"]
    assert (out / "bev.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["occupied_per_frame"] == [len(a) for a in occ.occupied]
    assert "occupied" in capsys.readouterr().out


def test_cli_window_mode(tmp_path, analytic_runtime):
    video, engines, out = tmp_path / "clip.mp4", tmp_path / "engines", tmp_path / "out"
    video.write_bytes(b"x")
    engines.mkdir()
    args = ["occupancy", str(video), "--engines", str(engines), "--voxel", "0.1", "--ply", "none", "--no-plot"]
    assert main(args + ["--out", str(out / "a")]) == 0
    assert main(args + ["--out", str(out / "b"), "--window", "2"]) == 0
    a, b = load_occupancy(out / "a" / "occupancy.npz"), load_occupancy(out / "b" / "occupancy.npz")
    assert np.array_equal(b.occupied[0], a.occupied[0])
    assert np.array_equal(b.occupied[2], np.union1d(a.occupied[1], a.occupied[2]))
    assert not (out / "a" / "bev.png").exists()


def test_cli_bad_input(tmp_path):
    video = tmp_path / "clip.mp4"
    with pytest.raises(FileNotFoundError, match="no video"):
        main(["occupancy", str(video), "--engines", str(tmp_path), "--out", str(tmp_path / "o")])
    video.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="no engine directory"):
        main(["occupancy", str(video), "--engines", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="voxel_size must be a positive"):
        main(["occupancy", str(video), "--engines", str(tmp_path), "--out", str(tmp_path / "o"), "--voxel", "0"])
    with pytest.raises(SystemExit):  # argparse: the two temporal modes exclude each other
        main(["occupancy", str(video), "--engines", str(tmp_path), "--out", "o", "--smooth", "1", "--window", "3"])
