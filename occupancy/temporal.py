"""Occupancy over time: second-difference smoothing of per-voxel occupancy, L3ROcc's sliding-window union, and
the static map (one union over the clip, the approach that cannot represent motion). Numpy only.

Smoothing solves, for every voxel independently, the smoothness objective

    min_p  sum_t w_t (p_t - z_t)^2  +  lambda * sum_t (p_{t+1} - 2 p_t + p_{t-1})^2  +  eps * sum_t (p_{t+1} - p_t)^2

i.e. (W + lambda D2^T D2 + eps D1^T D1) p = W z, a symmetric positive-definite pentadiagonal system per voxel,
solved by a banded Cholesky factorisation vectorised over voxels (a loop over time only). z_t is the frame's
observation (1 occupied, 0 free) and w_t = 1 where the voxel is observed at frame t, 0 where it is not, so
unobserved frames are filled in from their neighbours instead of pulling towards any value. With every frame
observed this is the plain (I + lambda D2^T D2) p = z up to eps; eps = 1e-6 lambda keeps a voxel seen at a single
frame solvable (its probability stays constant). A constant sequence is left unchanged; a straight line nearly
(lambda D2 ignores it, eps bends it by about 1e-6).
"""

from __future__ import annotations

import numpy as np

from d4rt.occupancy.grid import Occupancy

_EPS_RELATIVE = 1e-6


def second_difference_energy(p: np.ndarray) -> np.ndarray:
    """sum_t (p_{t+1} - 2 p_t + p_{t-1})^2 along the last axis. [..., T] -> [...]."""
    p = np.asarray(p, np.float64)
    return (np.diff(p, n=2, axis=-1) ** 2).sum(-1)


def _difference_bands(T: int, order: int) -> list[np.ndarray]:
    """Diagonals 0, 1, 2 of D^T D for the order-th difference operator D on T samples."""
    D = np.diff(np.eye(T), n=order, axis=0)  # [T - order, T]
    G = D.T @ D
    return [np.diagonal(G, k).copy() for k in range(3)]


def smooth_sequences(observed: np.ndarray, weights: np.ndarray | None = None, strength: float = 1.0) -> np.ndarray:
    """Second-difference smoothing of many sequences at once (see the module docstring).

    Args:
        observed: [V, T] observations z (e.g. 1 occupied, 0 free).
        weights: [V, T] non-negative observation weights (0 where unobserved); None: all ones.
        strength: lambda >= 0; 0 returns the observations.
    Returns:
        [V, T] float64 smoothed sequences.
    """
    z = np.asarray(observed, np.float64)
    if z.ndim != 2:
        raise ValueError(f"observed must be [V, T] sequences, got shape {z.shape}")
    w = np.ones_like(z) if weights is None else np.asarray(weights, np.float64)
    if w.shape != z.shape:
        raise ValueError(f"weights must match observed {z.shape}, got {w.shape}")
    if not (np.isfinite(z).all() and np.isfinite(w).all()) or (w < 0).any():
        raise ValueError("observed and weights must be finite, weights non-negative")
    if not (np.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength (lambda) must be a non-negative number, got {strength!r}")
    if strength == 0 or z.shape[1] < 3:
        return z.copy()
    if (w.sum(1) <= 0).any():
        raise ValueError("every sequence needs at least one observation with a positive weight")
    return _smooth_time_major(np.ascontiguousarray(z.T), np.ascontiguousarray(w.T), strength).T


def _smooth_time_major(z: np.ndarray, w: np.ndarray, strength: float) -> np.ndarray:
    """The solve behind ``smooth_sequences`` on time-major arrays z, w [T, V] (rows contiguous, so every step of
    the loops over time works on one contiguous row of V voxels). Returns p [T, V]."""
    T, V = z.shape
    g0, g1, g2 = _difference_bands(T, 2)
    h0, h1, _ = _difference_bands(T, 1)
    eps = _EPS_RELATIVE * strength
    a0 = w + (strength * g0 + eps * h0)[:, None]  # diagonal [T, V]
    a1 = strength * g1 + eps * h1  # first off-diagonal [T - 1], the same for every voxel
    a2 = strength * g2  # second off-diagonal [T - 2]
    # banded Cholesky A = L L^T: l0[i] = L[i, i], l1[i] = L[i + 1, i], l2[i] = L[i + 2, i]
    l0, l1, l2 = np.empty((T, V)), np.zeros((T, V)), np.zeros((T, V))
    for i in range(T):
        s = a0[i]  # a0 is not needed afterwards: updated in place
        if i >= 1:
            s -= l1[i - 1] ** 2
        if i >= 2:
            s -= l2[i - 2] ** 2
        np.sqrt(s, out=l0[i])
        if i + 1 < T:
            l1[i] = a1[i] - l2[i - 1] * l1[i - 1] if i >= 1 else a1[i]
            l1[i] /= l0[i]
        if i + 2 < T:
            np.divide(a2[i], l0[i], out=l2[i])
    y = w * z  # L y = W z, solved in place
    for i in range(T):
        if i >= 1:
            y[i] -= l1[i - 1] * y[i - 1]
        if i >= 2:
            y[i] -= l2[i - 2] * y[i - 2]
        y[i] /= l0[i]
    p = y  # L^T p = y, in place from the end
    for i in range(T - 1, -1, -1):
        if i + 1 < T:
            p[i] -= l1[i] * p[i + 1]
        if i + 2 < T:
            p[i] -= l2[i] * p[i + 2]
        p[i] /= l0[i]
    return p


def _union_mask(arrays: list[np.ndarray], num_voxels: int) -> np.ndarray:
    mask = np.zeros(num_voxels, bool)
    for a in arrays:
        mask[a] = True
    return mask


def smooth_occupancy(
    occ: Occupancy, strength: float = 1.0, threshold: float = 0.5, chunk_voxels: int = 1 << 18
) -> Occupancy:
    """Temporally smoothed states: each voxel's occupied (1) / free (0) sequence is smoothed with
    ``smooth_sequences`` (weight 1 where observed, 0 where not) and thresholded where the voxel is observed.

    Unobserved voxels stay unobserved: smoothing decides what an observed voxel is, not whether it was seen.
    Flicker (a voxel occupied in most frames and free in one) is removed; motion lasting several frames stays.

    Args:
        strength: lambda of the second-difference term (larger = smoother).
        threshold: smoothed probability at or above which an observed voxel is occupied.
        chunk_voxels: voxels solved at once (memory: about 80 bytes x T per voxel).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if not (np.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength (lambda) must be a non-negative number, got {strength!r}")
    T, n = occ.num_frames, occ.grid.num_voxels
    union = np.flatnonzero(_union_mask(occ.occupied + occ.free, n))
    occ_pos = [np.searchsorted(union, a) for a in occ.occupied]
    free_pos = [np.searchsorted(union, a) for a in occ.free]
    new_occ: list[list[np.ndarray]] = [[] for _ in range(T)]
    new_free: list[list[np.ndarray]] = [[] for _ in range(T)]
    for lo in range(0, len(union), chunk_voxels):
        hi = min(lo + chunk_voxels, len(union))
        z = np.zeros((T, hi - lo))  # time-major: frame t's row is contiguous
        w = np.zeros((T, hi - lo))
        for t in range(T):
            for pos, value in ((occ_pos[t], 1.0), (free_pos[t], 0.0)):
                sel = pos[np.searchsorted(pos, lo) : np.searchsorted(pos, hi)] - lo
                z[t, sel] = value
                w[t, sel] = 1.0
        p = _smooth_time_major(z, w, strength) if strength > 0 and T >= 3 else z
        ids = union[lo:hi]
        for t in range(T):
            seen = w[t] > 0
            is_occ = p[t] >= threshold
            new_occ[t].append(ids[seen & is_occ])
            new_free[t].append(ids[seen & ~is_occ])
    empty = np.zeros(0, np.int64)
    return Occupancy(
        occ.grid,
        [np.concatenate(a) if a else empty for a in new_occ],
        [np.concatenate(a) if a else empty for a in new_free],
        occ.T_wc.copy(),
        occ.K.copy(),
        occ.metric_scale,
    )


def window_union(occ: Occupancy, window: int) -> Occupancy:
    """L3ROcc's sliding window: frame t gets the union of frames max(0, t - window + 1) .. t (causal).

    Occupied in any frame of the window -> occupied; else free in any -> free; else unobserved.
    """
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive whole number of frames, got {window!r}")
    window = int(window)
    n = occ.grid.num_voxels
    occ_count = np.zeros(n, np.int32)
    free_count = np.zeros(n, np.int32)
    occupied, free = [], []
    for t in range(occ.num_frames):
        occ_count[occ.occupied[t]] += 1
        free_count[occ.free[t]] += 1
        if t >= window:
            occ_count[occ.occupied[t - window]] -= 1
            free_count[occ.free[t - window]] -= 1
        is_occ = occ_count > 0
        occupied.append(np.flatnonzero(is_occ))
        free.append(np.flatnonzero((free_count > 0) & ~is_occ))
    return Occupancy(occ.grid, occupied, free, occ.T_wc.copy(), occ.K.copy(), occ.metric_scale)


def static_map(occ: Occupancy) -> Occupancy:
    """The static approach (L3ROcc's global map): one union over the whole clip, given to every frame."""
    n = occ.grid.num_voxels
    is_occ = _union_mask(occ.occupied, n)
    occupied = np.flatnonzero(is_occ)
    free = np.flatnonzero(_union_mask(occ.free, n) & ~is_occ)
    T = occ.num_frames
    return Occupancy(occ.grid, [occupied] * T, [free] * T, occ.T_wc.copy(), occ.K.copy(), occ.metric_scale)
