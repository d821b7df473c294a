"""Numpy geometry shared by the runtime, training metrics and occupancy: the one Umeyama and the one
intrinsics solver in the house. No torch.

Conventions (design.md): OpenCV camera axes (+x right, +y down, +z forward); extrinsics are camera-to-world
``T_wc`` [4, 4]; intrinsics K in pixels of the S x S network input; uv normalised u = x / (S - 1).

One convention per quantity (docs/metrics.md):
- K of a frame resized to the S x S input (:func:`scale_intrinsics`): x_S = x (S - 1) / (W - 1), the "corners
  aligned" map under which a pixel keeps its uv (u = x / (W - 1) = x_S / (S - 1), the house's uv convention and
  OpenD4RT's patch sampling at u (W - 1)). OpenD4RT scales focal lengths by S / W (the half-pixel map of an image
  resize); the two differ by (S - 1) W / (S (W - 1)) - 1, 0.6 % at 1296 -> 128, and only ours matches uv.
- A transform from two point sets: :func:`align_sim3`, the one estimator of the house: Umeyama on the 85 % most
  confident pairs (paper App. B), then refits without the pairs whose residual exceeds 5x the median (until stable). Camera
  poses (:func:`poses_from_grid_points`: ``Runtime.camera_poses``, ``VideoScene``'s poses and trajectory.json, the
  server, ``d4rt evaluate``) and the alignment of video windows all use it (docs/metrics.md says why).
- Benchmark resolutions are the benchmark's own definition, not a resize of ours: TAPVid-3D scales fx, fy by
  256 / min(H, W) (:func:`short_side_scale`).
"""

from __future__ import annotations

import numpy as np


def rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[..., 3, 3], [..., 3] -> [..., 4, 4] homogeneous transform x -> R x + t."""
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64)
    M = np.zeros(np.broadcast_shapes(R.shape[:-2], t.shape[:-1]) + (4, 4))
    M[..., :3, :3] = R
    M[..., :3, 3] = t
    M[..., 3, 3] = 1.0
    return M


def invert_rigid(M: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4] (R^T, -R^T t), exact for a rotation R."""
    M = np.asarray(M, np.float64)
    Rt = np.swapaxes(M[..., :3, :3], -1, -2)
    return rigid(Rt, -(Rt @ M[..., :3, 3, None])[..., 0])


def transform_points(M: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply transforms [..., 4, 4] to points [..., 3] (broadcasting): R p + t."""
    M = np.asarray(M)
    return (M[..., :3, :3] @ np.asarray(p)[..., None])[..., 0] + M[..., :3, 3]


def scale_intrinsics(K: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """K [..., 3, 3] of a height x width image -> K of its size x size resize, in the house's uv convention.

    x_S = x (S - 1) / (W - 1), y_S = y (S - 1) / (H - 1) (fx, cx and fy, cy scaled alike): the map under which a
    point keeps its normalised uv, u = x / (W - 1) = x_S / (S - 1). See the module doc for why not S / W.
    """
    for name, v in (("height", height), ("width", width), ("size", size)):
        if int(v) < 2:
            raise ValueError(f"scale_intrinsics: {name} must be >= 2 pixels, got {v}")
    sx, sy = (size - 1) / (width - 1), (size - 1) / (height - 1)
    return np.diag([sx, sy, 1.0]) @ np.asarray(K, np.float64)


def short_side_scale(height: int, width: int, short_side: int = 256) -> float:
    """The factor short_side / min(H, W) by which TAPVid-3D scales fx, fy, cx, cy to its metric resolution
    (tapnet ``tapvid3d/evaluation/evaluate_model.py``, ``get_new_hw_with_given_smallest_side_length``)."""
    if min(height, width) < 1:
        raise ValueError(f"short_side_scale: image size must be positive, got {height} x {width}")
    return short_side / min(height, width)


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True, weights: np.ndarray | None = None):
    """Least-squares similarity (or rigid) transform with ``dst ~ s * R @ src + t`` (Umeyama 1991).

    Args:
        src, dst: [N, 3] corresponding points, N >= 3 not all collinear.
        with_scale: estimate s (Sim(3)); otherwise s = 1 (SE(3)).
        weights: optional [N] non-negative weights.
    Returns:
        s (float), R [3, 3] (det +1), t [3]
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"umeyama needs src and dst of the same shape [N, 3], got {src.shape} and {dst.shape}")
    if src.shape[0] < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {src.shape[0]}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("umeyama got NaN or infinite points; drop invalid points first")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(src),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be [N] = [{len(src)}], non-negative with a positive sum")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs  # [3, 3]
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    var_s = float(w @ (xs**2).sum(1))
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def similarity_matrix(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[4, 4] matrix of x -> s R x + t."""
    M = np.eye(4)
    M[:3, :3] = s * R
    M[:3, 3] = t
    return M


KEEP_FRACTION = 0.85  # App. B: the top 85 % most confident pairs enter the fit
TRIM = 5.0  # then refits without the pairs whose residual exceeds 5x the median (ours; docs/metrics.md: why 5)
REFITS = 5  # at most this many refits; they stop as soon as the kept pairs stop changing


def align_sim3(src: np.ndarray, dst: np.ndarray, confidence: np.ndarray | None = None, keep: float = KEEP_FRACTION,
               with_scale: bool = True, trim: float | None = TRIM) -> np.ndarray:
    """[4, 4] Sim(3) matrix mapping src onto dst (rigid SE(3) when not ``with_scale``): the house's one estimator.

    Umeyama on the ``keep`` most confident finite pairs (pairs tied with the last one kept go in too); then, unless
    ``trim`` is None, refits on those of the first fit's pairs whose residual is within ``trim`` times the median
    residual of the current fit, until that set stops changing (at most ``REFITS`` times). Confidence cannot rank
    every outlier below every inlier: with 10 % outliers in each window's answers, 19 % of the pairs hold one, more
    than the 15 % the first fit drops, and one refit from a fit pulled by them may keep some. With ``confidence``
    None every finite pair enters the first fit (no ranking to keep by).

    Args:
        src, dst: [N, 3] the same points in two frames; confidence: [N] (e.g. the product of both queries').
    """
    src, dst = np.asarray(src, np.float64).reshape(-1, 3), np.asarray(dst, np.float64).reshape(-1, 3)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must both be [N, 3], got {src.shape} and {dst.shape}")
    finite = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    if confidence is None:
        chosen = np.flatnonzero(finite)
    else:
        confidence = np.asarray(confidence, np.float64).reshape(-1)
        if confidence.shape != (len(src),):
            raise ValueError(f"confidence must be [N] = [{len(src)}], got shape {confidence.shape}")
        finite &= np.isfinite(confidence)
        ranked = np.sort(confidence[finite])[::-1]
        if len(ranked) >= 3:  # the top `keep` share; pairs tied with the last one kept go in too (no arbitrary cut)
            chosen = np.flatnonzero(finite & (confidence >= ranked[max(3, int(np.ceil(keep * len(ranked)))) - 1]))
    if finite.sum() < 3:
        raise ValueError(
            f"only {int(finite.sum())} finite point pairs to fit a transform; it needs at least 3: query a finer "
            f"grid (or, between video windows, raise the overlap)"
        )
    s, R, t = umeyama(src[chosen], dst[chosen], with_scale=with_scale)
    if trim is None:
        return similarity_matrix(s, R, t)
    inliers = chosen
    for _ in range(REFITS):  # refit on the pairs within trim x the median residual of the current fit, until stable
        residual = np.linalg.norm(s * src[chosen] @ R.T + t - dst[chosen], axis=1)
        kept = chosen[residual <= trim * np.median(residual)]
        if len(kept) < 3 or np.array_equal(kept, inliers):
            break
        inliers = kept
        s, R, t = umeyama(src[inliers], dst[inliers], with_scale=with_scale)
    return similarity_matrix(s, R, t)


def poses_from_grid_points(
    xyz_own: np.ndarray, xyz_first: np.ndarray, confidence: np.ndarray | None = None, trim: float | None = TRIM
) -> np.ndarray:
    """Camera-to-world poses with frame 0's camera as the world, from the same query points seen in two cameras.

    For frame j (j >= 1), ``xyz_own[j - 1]`` holds a grid of frame-j points in camera j and ``xyz_first[j - 1]``
    the same points in camera 0; the rigid :func:`align_sim3` fit from the first to the second is T_wc of frame j.

    Args:
        xyz_own, xyz_first: [T - 1, G, 3]; confidence: [T - 1, G], the product of both queries' confidences (None:
            every pair ranks alike); trim: :func:`align_sim3`'s refit rule.
    Returns:
        T_wc [T, 4, 4], T_wc[0] = identity.
    """
    xyz_own, xyz_first = np.asarray(xyz_own, np.float64), np.asarray(xyz_first, np.float64)
    if xyz_own.ndim != 3 or xyz_own.shape[-1] != 3 or xyz_own.shape != xyz_first.shape:
        raise ValueError(f"xyz_own and xyz_first must both be [T - 1, G, 3], got {xyz_own.shape} and {xyz_first.shape}")
    if confidence is not None and np.shape(confidence) != xyz_own.shape[:2]:
        raise ValueError(f"confidence must be [T - 1, G] = {list(xyz_own.shape[:2])}, got {list(np.shape(confidence))}")
    poses = np.tile(np.eye(4), (len(xyz_own) + 1, 1, 1))
    for i in range(len(xyz_own)):
        c = None if confidence is None else confidence[i]
        poses[i + 1] = align_sim3(xyz_own[i], xyz_first[i], c, with_scale=False, trim=trim)
    return poses


def focal_from_points(uv: np.ndarray, xyz_cam: np.ndarray, image_size: int, min_offset: float = 0.05):
    """Pinhole focal lengths from points in their own camera frame, the median over a grid (OpenD4RT's
    estimator: fx = z (u - 0.5) / x, median; opend4rt/README.md "Meaning of the outputs").

    fx = z (u - 0.5) / x and fy = z (v - 0.5) / y in normalised units, converted to pixels of the S x S input
    (times S - 1). The principal point is taken at the image centre. Points too close to the centre lines
    (|u - 0.5| < min_offset) or behind the camera are skipped: they carry no focal information.

    Args:
        uv: [N, 2] normalised query positions; xyz_cam: [N, 3] their points in the same frame's camera.
    Returns:
        K [3, 3] in pixels of the S x S input.
    """
    uv, xyz = np.asarray(uv, np.float64), np.asarray(xyz_cam, np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2 or xyz.shape != (len(uv), 3):
        raise ValueError(f"uv must be [N, 2] and xyz_cam [N, 3], got {uv.shape} and {xyz.shape}")
    x, y, z = xyz.T
    du, dv = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    ok_x = (np.abs(du) >= min_offset) & (z > 0) & (np.abs(x) > 1e-9)
    ok_y = (np.abs(dv) >= min_offset) & (z > 0) & (np.abs(y) > 1e-9)
    if not (z > 0).any():
        raise ValueError("no point in front of the camera (every predicted z <= 0), so no focal length: the model's "
                         "depth is not usable (an untrained or random-weight checkpoint?)")
    if ok_x.sum() == 0 or ok_y.sum() == 0:
        raise ValueError("no usable points for the focal length: query a grid away from the image centre, z > 0")
    scale = image_size - 1
    fx = float(np.median(z[ok_x] * du[ok_x] / x[ok_x])) * scale
    fy = float(np.median(z[ok_y] * dv[ok_y] / y[ok_y])) * scale
    c = scale / 2.0
    return np.array([[fx, 0.0, c], [0.0, fy, c], [0.0, 0.0, 1.0]])


def grid_uv(n: int) -> np.ndarray:
    """An n x n grid of normalised (u, v) in [0, 1], row-major (v outer, u inner). -> [n * n, 2] float32."""
    g = np.linspace(0.0, 1.0, n, dtype=np.float32)
    u, v = np.meshgrid(g, g, indexing="xy")
    return np.stack([u.ravel(), v.ravel()], -1)

