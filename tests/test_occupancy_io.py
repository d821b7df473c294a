"""Occupancy files: the sparse npz round trip and its checks, PLY parsed back, the bird's-eye-view PNG, scores."""

import numpy as np
import pytest

from d4rt.occupancy.grid import FREE, OCCUPIED, UNOBSERVED, Occupancy, VoxelGrid
from d4rt.occupancy.io import bev_states, load_occupancy, plot_bev, save_occupancy, write_frame_ply
from d4rt.occupancy.metrics import occupancy_scores


def random_occupancy(rng, T=5, shape=(7, 5, 9)) -> Occupancy:
    grid = VoxelGrid(rng.normal(size=3), rng.uniform(0.02, 0.3), shape)
    states = rng.integers(0, 3, (T, grid.num_voxels))
    states[0] = 0  # a frame with nothing observed
    T_wc = np.tile(np.eye(4), (T, 1, 1))
    T_wc[:, :3, 3] = rng.normal(size=(T, 3))
    K = rng.uniform(50, 300, (T, 3, 3))
    return Occupancy(
        grid,
        [np.flatnonzero(s == 2) for s in states],
        [np.flatnonzero(s == 1) for s in states],
        T_wc,
        K,
        float(rng.uniform(0.5, 2)),
    )


def test_npz_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    occ = random_occupancy(rng)
    path = save_occupancy(tmp_path / "sub" / "occ.npz", occ)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))  # no temporary left behind
    back = load_occupancy(path)
    assert back.grid.same_as(occ.grid) and back.grid.shape == occ.grid.shape
    assert back.metric_scale == occ.metric_scale
    np.testing.assert_array_equal(back.T_wc, occ.T_wc)
    np.testing.assert_array_equal(back.K, occ.K)
    assert back.num_frames == occ.num_frames
    for t in range(occ.num_frames):
        np.testing.assert_array_equal(back.occupied[t], occ.occupied[t])
        np.testing.assert_array_equal(back.free[t], occ.free[t])
        assert back.occupied[t].dtype == np.int64
        np.testing.assert_array_equal(back.dense(t), occ.dense(t))


def test_npz_bad_files(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    occ = random_occupancy(rng)
    with pytest.raises(FileNotFoundError, match="no occupancy file"):
        load_occupancy(tmp_path / "missing.npz")
    path = save_occupancy(tmp_path / "occ.npz", occ)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_occupancy(tmp_path / "cut.npz")
    arrays = dict(np.load(path))
    del arrays["free_indptr"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing \['free_indptr'\]"):
        load_occupancy(tmp_path / "partial.npz")
    arrays = dict(np.load(path))
    t = 1 + int(np.argmax([len(a) for a in occ.free[1:]]))
    a, b = arrays["free_indptr"][t], arrays["free_indptr"][t] + 1
    arrays["free_starts"][[a, b]] = arrays["free_starts"][[b, a]]  # swap two runs
    np.savez(tmp_path / "unsorted.npz", **arrays)
    with pytest.raises(ValueError, match="not sorted"):
        load_occupancy(tmp_path / "unsorted.npz")
    arrays = dict(np.load(path))
    arrays["occupied_lengths"][-1] += occ.grid.num_voxels
    np.savez(tmp_path / "outside.npz", **arrays)
    with pytest.raises(ValueError, match="outside the grid"):
        load_occupancy(tmp_path / "outside.npz")
    overlap = Occupancy(occ.grid, list(occ.occupied), list(occ.free), occ.T_wc, occ.K)
    overlap.occupied[t] = np.union1d(occ.occupied[t], occ.free[t][:1])
    save_occupancy(tmp_path / "overlap.npz", overlap)
    with pytest.raises(ValueError, match="both occupied and free"):
        load_occupancy(tmp_path / "overlap.npz")


def test_runs_round_trip_edge_cases(tmp_path):
    grid = VoxelGrid(np.zeros(3), 0.1, (2, 3, 4))
    n = grid.num_voxels
    lists = [np.arange(n), np.zeros(0, np.int64), np.array([0, n - 1]), np.array([3, 4, 5, 9, 11, 12])]
    occ = Occupancy(
        grid, lists, [np.zeros(0, np.int64)] * 4, np.tile(np.eye(4), (4, 1, 1)), np.tile(np.eye(3), (4, 1, 1))
    )
    back = load_occupancy(save_occupancy(tmp_path / "e.npz", occ))
    for a, b in zip(back.occupied, lists, strict=True):
        np.testing.assert_array_equal(a, b)
    with np.load(tmp_path / "e.npz") as data:
        assert data["occupied_lengths"].tolist() == [n, 1, 1, 3, 1, 2]


def parse_ply(path):
    """A minimal reader for binary little-endian vertex PLY files (independent of the writer)."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    types = {"float": "<f4", "uchar": "u1", "double": "<f8", "int": "<i4"}
    props = [line.split() for line in header if line.startswith("property")]
    dtype = np.dtype([(p[2], types[p[1]]) for p in props])
    assert len(raw) - end == count * dtype.itemsize, "payload size does not match the header"
    return np.frombuffer(raw[end:], dtype=dtype)


def test_ply_parses_back(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    occ = random_occupancy(rng)
    t = 2
    path = write_frame_ply(tmp_path / "frame.ply", occ, t)
    v = parse_ply(path)
    xyz = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float64)
    ijk = occ.grid.voxel_coords(occ.occupied[t])
    expected = occ.grid.origin + (ijk + 0.5) * occ.grid.voxel_size
    np.testing.assert_allclose(xyz, expected, rtol=1e-6, atol=1e-6)
    assert {"red", "green", "blue"} <= set(v.dtype.names)
    empty = parse_ply(write_frame_ply(tmp_path / "empty.ply", occ, 0))
    assert len(empty) == 0
    with pytest.raises(ValueError, match="out of range"):
        write_frame_ply(tmp_path / "x.ply", occ, occ.num_frames)


def test_bev_states_and_png(tmp_path):
    grid = VoxelGrid(np.zeros(3), 0.1, (3, 4, 2))
    col = lambda i, j, k: (i * 4 + j) * 2 + k  # noqa: E731
    occ = Occupancy(
        grid,
        [np.array([col(0, 3, 0)]), np.zeros(0, np.int64)],
        [np.array([col(0, 0, 0), col(1, 2, 1)]), np.array([col(2, 1, 1)])],
        np.tile(np.eye(4), (2, 1, 1)),
        np.tile(np.eye(3), (2, 1, 1)),
    )
    top = bev_states(occ, 0)
    assert top.shape == (3, 2)
    assert top.tolist() == [[OCCUPIED, UNOBSERVED], [UNOBSERVED, FREE], [UNOBSERVED, UNOBSERVED]]
    assert bev_states(occ, 0, y_range=(0.3, 0.4)).tolist() == [[OCCUPIED, UNOBSERVED]] + [[UNOBSERVED] * 2] * 2
    with pytest.raises(ValueError, match="holds no voxel centre"):
        bev_states(occ, 0, y_range=(1.0, 2.0))
    path = plot_bev(tmp_path / "bev.png", occ, y_range=(0.0, 0.3))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    with pytest.raises(ValueError, match="frames must be"):
        plot_bev(tmp_path / "x.png", occ, frames=[5])


def test_scores_count_by_hand():
    grid = VoxelGrid(np.zeros(3), 0.1, (1, 1, 10))
    eye = np.tile(np.eye(4), (1, 1, 1)), np.tile(np.eye(3), (1, 1, 1))
    gt = Occupancy(grid, [np.array([2, 3, 4])], [np.array([0, 1, 5, 6])], *eye)
    # predicted occupied: 3, 4 (hits), 5 (wrong: free in gt), 8 (not observed in gt: not scored)
    pred = Occupancy(grid, [np.array([3, 4, 5, 8])], [np.array([0, 1])], *eye)
    s = occupancy_scores(pred, gt)
    assert (s.true_positive[0], s.false_positive[0], s.false_negative[0]) == (2, 1, 1)
    assert s.iou[0] == 0.5 and s.precision[0] == 2 / 3 and s.recall[0] == 2 / 3
    assert s.f_score[0] == pytest.approx(2 / 3) and s.clip["iou"] == 0.5
    r = occupancy_scores(pred, gt, region=np.array([4, 5, 6]))  # only 4 (hit) and 5 (wrong) count
    assert (r.true_positive[0], r.false_positive[0], r.false_negative[0]) == (1, 1, 0)
    other = Occupancy(VoxelGrid(np.zeros(3), 0.2, (1, 1, 10)), pred.occupied, pred.free, *eye)
    with pytest.raises(ValueError, match="different voxel grids"):
        occupancy_scores(other, gt)
