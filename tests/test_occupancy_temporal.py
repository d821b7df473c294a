"""Occupancy over time: the second-difference smoother against a dense float64 solve, its energy and invariants,
flicker removal, the sliding-window union against a plain OR, and the static map."""

import numpy as np
import pytest

from d4rt.occupancy.grid import Occupancy, VoxelGrid
from d4rt.occupancy.temporal import (
    second_difference_energy,
    smooth_occupancy,
    smooth_sequences,
    static_map,
    window_union,
)


def dense_reference(z, w, lam, eps_relative=1e-6):
    """Solve (W + lam D2^T D2 + eps D1^T D1) p = W z per row with np.linalg.solve (float64).
    Returns (p [V, T], the 2-norm condition number of each row's matrix [V])."""
    T = z.shape[1]
    D2 = np.diff(np.eye(T), n=2, axis=0)
    D1 = np.diff(np.eye(T), n=1, axis=0)
    out, cond = np.empty_like(z), np.empty(len(z))
    for v in range(len(z)):
        A = np.diag(w[v]) + lam * D2.T @ D2 + eps_relative * lam * D1.T @ D1
        out[v] = np.linalg.solve(A, w[v] * z[v])
        cond[v] = np.linalg.cond(A)
    return out, cond


@pytest.mark.parametrize("T", [3, 4, 7, 20])
def test_smoothing_matches_dense_solve(T):
    rng = np.random.default_rng(np.random.randint(2**31))
    V = 50
    z = rng.normal(size=(V, T))
    w = rng.uniform(0.1, 2.0, (V, T)) * (rng.uniform(size=(V, T)) > 0.3)
    w[:, rng.integers(T)] = 1.0  # every voxel observed at least once
    w[0] = 0.0
    w[0, rng.integers(T)] = 1.0  # one voxel observed at a single frame: constant at its observation
    lam = rng.uniform(0.1, 20)
    p = smooth_sequences(z, w, lam)
    ref, cond = dense_reference(z, w, lam)
    # two backward-stable float64 solves differ by about cond(A) * eps * |p| per row; a row seen at one or two
    # frames is held along straight lines by eps alone (cond up to ~1e9). 10x: the worst of 80 000 seeded rows
    # (T in 3, 4, 7, 20) was 0.74x
    error = np.abs(p - ref).max(1)
    bound = 10 * cond * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(ref).max(1))
    assert (error <= bound).all(), f"worst row: {error.max():.2e} (bound {bound[error.argmax()]:.2e})"
    np.testing.assert_allclose(p[0], z[0, np.argmax(w[0])], atol=1e-5)


def test_smoothing_with_every_frame_observed_is_i_plus_lambda_d2():
    rng = np.random.default_rng(np.random.randint(2**31))
    T, lam = 16, rng.uniform(0.5, 5)
    z = rng.uniform(size=(30, T))
    D2 = np.diff(np.eye(T), n=2, axis=0)
    exact = np.linalg.solve(np.eye(T) + lam * D2.T @ D2, z.T).T
    np.testing.assert_allclose(smooth_sequences(z, None, lam), exact, atol=1e-5)


def test_smoothing_reduces_energy_and_keeps_constants():
    rng = np.random.default_rng(np.random.randint(2**31))
    z = (rng.uniform(size=(40, 24)) > 0.5).astype(float)
    for lam in (0.3, 3.0, 30.0):
        p = smooth_sequences(z, None, lam)
        assert (second_difference_energy(p) < second_difference_energy(z)).all()
    c = rng.uniform(size=(10, 1)) * np.ones((10, 24))
    w = rng.uniform(0, 1, c.shape) * (rng.uniform(size=c.shape) > 0.5)
    w[:, 0] = 1.0
    np.testing.assert_allclose(smooth_sequences(c, w, rng.uniform(0.1, 50)), c, atol=1e-9)
    np.testing.assert_array_equal(smooth_sequences(z, None, 0.0), z)


def make_occupancy(states: np.ndarray, grid: VoxelGrid) -> Occupancy:
    """states [T, V] of 0 unobserved / 1 free / 2 occupied -> Occupancy."""
    T = len(states)
    return Occupancy(
        grid,
        [np.flatnonzero(s == 2) for s in states],
        [np.flatnonzero(s == 1) for s in states],
        np.tile(np.eye(4), (T, 1, 1)),
        np.tile(np.eye(3), (T, 1, 1)),
    )


def random_occupancy(rng, T=9, shape=(5, 4, 6)) -> Occupancy:
    grid = VoxelGrid(rng.normal(size=3), rng.uniform(0.05, 0.2), shape)
    return make_occupancy(rng.integers(0, 3, (T, grid.num_voxels)), grid)


def test_smooth_occupancy_removes_flicker_and_keeps_changes():
    rng = np.random.default_rng(np.random.randint(2**31))
    T = 10
    grid = VoxelGrid(np.zeros(3), 0.1, (1, 1, 5))
    states = np.zeros((T, 5), int)
    states[:, 0] = 2
    states[rng.integers(2, T - 2), 0] = 1  # flicker: free for one frame
    states[:, 1] = 1  # always free
    states[:, 2] = [2] * 5 + [1] * 5  # a real change (something left)
    states[[0, T - 1], 3] = 2  # seen only at the ends
    states[:, 4] = rng.integers(0, 3, T)  # random
    occ = smooth_occupancy(make_occupancy(states, grid), strength=2.0)
    new = np.stack([occ.dense(t).ravel() for t in range(T)])
    assert (new[:, 0] == 2).all()
    assert (new[:, 1] == 1).all()
    assert new[:, 2].tolist() == [2] * 5 + [1] * 5
    assert new[:, 3].tolist() == [2] + [0] * (T - 2) + [2]  # unobserved stays unobserved
    assert ((new[:, 4] == 0) == (states[:, 4] == 0)).all()
    for t in range(T):
        assert np.all(np.diff(occ.occupied[t]) > 0) and np.all(np.diff(occ.free[t]) > 0)


def test_smooth_occupancy_chunks_agree():
    rng = np.random.default_rng(np.random.randint(2**31))
    occ = random_occupancy(rng)
    a = smooth_occupancy(occ, 1.5, chunk_voxels=7)
    b = smooth_occupancy(occ, 1.5, chunk_voxels=1 << 18)
    for t in range(occ.num_frames):
        np.testing.assert_array_equal(a.occupied[t], b.occupied[t])
        np.testing.assert_array_equal(a.free[t], b.free[t])


@pytest.mark.parametrize("window", [1, 3, 20])
def test_window_union_is_or_over_window(window):
    rng = np.random.default_rng(np.random.randint(2**31))
    occ = random_occupancy(rng)
    out = window_union(occ, window)
    n = occ.grid.num_voxels
    for t in range(occ.num_frames):
        frames = range(max(0, t - window + 1), t + 1)
        any_occ = np.zeros(n, bool)
        any_free = np.zeros(n, bool)
        for s in frames:
            any_occ[occ.occupied[s]] = True
            any_free[occ.free[s]] = True
        np.testing.assert_array_equal(out.occupied[t], np.flatnonzero(any_occ))
        np.testing.assert_array_equal(out.free[t], np.flatnonzero(any_free & ~any_occ))
    if window == 1:
        assert all(np.array_equal(a, b) for a, b in zip(out.occupied, occ.occupied, strict=True))


def test_static_map_is_union_over_clip():
    rng = np.random.default_rng(np.random.randint(2**31))
    occ = random_occupancy(rng)
    static = static_map(occ)
    last = window_union(occ, occ.num_frames)
    for t in range(occ.num_frames):
        np.testing.assert_array_equal(static.occupied[t], last.occupied[-1])
        np.testing.assert_array_equal(static.free[t], last.free[-1])


def test_temporal_bad_input():
    rng = np.random.default_rng(np.random.randint(2**31))
    occ = random_occupancy(rng)
    with pytest.raises(ValueError, match="window must be a positive whole number"):
        window_union(occ, 0)
    with pytest.raises(ValueError, match="threshold"):
        smooth_occupancy(occ, threshold=1.0)
    with pytest.raises(ValueError, match="strength"):
        smooth_sequences(np.ones((2, 5)), None, -1.0)
    with pytest.raises(ValueError, match="at least one observation"):
        smooth_sequences(np.ones((2, 5)), np.zeros((2, 5)), 1.0)
    with pytest.raises(ValueError, match="weights must match"):
        smooth_sequences(np.ones((2, 5)), np.ones((2, 4)), 1.0)
