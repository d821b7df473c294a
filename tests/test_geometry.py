import numpy as np
import pytest

from d4rt.runtime.geometry import focal_from_points, grid_uv, umeyama


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(np.random.randint(2**31))
    src = rng.normal(size=(200, 3))
    R, s, t = random_rotation(rng), rng.uniform(0.2, 5), rng.normal(size=3)
    dst = s * src @ R.T + t
    s2, R2, t2 = umeyama(src, dst)
    assert abs(s2 - s) < 1e-9 and np.abs(R2 - R).max() < 1e-9 and np.abs(t2 - t).max() < 1e-9
    s3, R3, _ = umeyama(src, dst, with_scale=False)
    assert s3 == 1.0 and np.abs(R3 - R).max() < 1e-9


def test_umeyama_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        umeyama(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        umeyama(np.full((5, 3), np.nan), np.zeros((5, 3)))


def test_focal_from_points():
    rng = np.random.default_rng(np.random.randint(2**31))
    S, fx, fy = 256, rng.uniform(150, 400), rng.uniform(150, 400)
    uv = grid_uv(16).astype(np.float64)
    z = rng.uniform(1, 10, len(uv))
    c = (S - 1) / 2
    x = (uv[:, 0] * (S - 1) - c) * z / fx
    y = (uv[:, 1] * (S - 1) - c) * z / fy
    K = focal_from_points(uv, np.stack([x, y, z], -1), S)
    assert abs(K[0, 0] - fx) < 1e-6 * fx and abs(K[1, 1] - fy) < 1e-6 * fy
