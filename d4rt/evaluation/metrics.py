"""Evaluation metrics (numpy, float64), each computed the way the benchmark's authors compute it; the source
(file and function) is named in each docstring and in docs/metrics.md.

D4RT predicts geometry up to one scale per clip, so every 3-D metric first aligns the scale (named in the metric's
key: ``_frame_median`` / ``_clip_median`` for depth, ``median`` / ``per_trajectory`` for tracks); camera poses are
aligned with a similarity transform (the house's one Umeyama, :func:`d4rt.runtime.geometry.umeyama`, which with no
weights is evo's ``umeyama_alignment``).
"""

from __future__ import annotations

import warnings

import numpy as np

from d4rt.runtime.geometry import invert_rigid, umeyama

TAPVID3D_THRESHOLDS_PX = (1, 2, 4, 8, 16)
TAPVID3D_RESOLUTION = 256  # TAPVid-3D measures pixel thresholds at a short side of 256 (evaluate_model.py)
TRACK_SCALINGS = ("median", "per_trajectory")
MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0  # monodepth2 evaluate_depth.py: valid ground truth and the prediction clamp
DEPTH_SCALINGS = ("frame_median", "clip_median")


def _as_mask(mask, shape) -> np.ndarray:
    return np.ones(shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), shape)


def _nonempty(mask: np.ndarray, what: str) -> None:
    if not mask.any():
        raise ValueError(f"no valid {what} to evaluate: the mask selects nothing")


# ----- depth -----------------------------------------------------------------------------------------------------
def _depth_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """monodepth2 ``evaluate_depth.py`` ``compute_errors``: AbsRel = mean |g - p| / g, delta = mean(max(g / p,
    p / g) < 1.25). pred, gt [P] (pred already scaled and clamped)."""
    return float(np.mean(np.abs(gt - pred) / gt)), float(np.mean(np.maximum(gt / pred, pred / gt) < 1.25))


def _median_scaled(pred: np.ndarray, gt: np.ndarray, min_depth: float, max_depth: float) -> tuple[np.ndarray, float]:
    """s = median(gt) / median(pred), then pred * s clamped into [min_depth, max_depth] (monodepth2's order).
    With median(pred) <= 0 no positive scale exists: every prediction counts as min_depth (scale NaN)."""
    m = np.median(pred)
    if m <= 0:
        return np.full_like(pred, min_depth), float("nan")
    s = float(np.median(gt) / m)
    return np.clip(pred * s, min_depth, max_depth), s


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    scaling: str = "frame_median",
    min_depth: float = MIN_DEPTH,
    max_depth: float = MAX_DEPTH,
) -> dict[str, float]:
    """Depth AbsRel and delta < 1.25 as monodepth2 computes them (``evaluate_depth.py``, ``evaluate`` and
    ``compute_errors``).

    Valid pixels are those with a finite ground truth in (min_depth, max_depth) (and ``mask``); every one of them
    counts, whatever the prediction. The prediction is median-scaled, s = median(gt) / median(pred) over the valid
    pixels, then clamped into [min_depth, max_depth], so a negative, zero or far prediction counts as min_depth or
    max_depth instead of being dropped. A non-finite prediction counts as min_depth (+inf as max_depth).

    Args:
        pred, gt: depths [T, H, W] (or any [T, ...]; one image is [1, H, W]); gt in metres (or the clip's
            units).
        mask: optional bool [T, ...] further restricting the valid pixels.
        scaling: "frame_median": one scale per frame and errors averaged over frames (monodepth2, per image);
            "clip_median": one scale for the whole clip and errors averaged over all its valid pixels.
    Returns:
        {"abs_rel", "delta_1.25", "frames"} (frames: how many frames had a valid pixel).
    """
    if scaling not in DEPTH_SCALINGS:
        raise ValueError(f"depth scaling {scaling!r} is not one of {DEPTH_SCALINGS}")
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(f"pred and gt depth must be [T, ...] of one shape, got {pred.shape} and {gt.shape}")
    valid = _as_mask(mask, gt.shape) & np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    _nonempty(valid, f"depth pixels (ground truth in ({min_depth}, {max_depth}))")
    pred = np.nan_to_num(pred, nan=min_depth, posinf=max_depth, neginf=min_depth)
    if scaling == "clip_median":
        p, _ = _median_scaled(pred[valid], gt[valid], min_depth, max_depth)
        abs_rel, delta = _depth_errors(p, gt[valid])
        return {"abs_rel": abs_rel, "delta_1.25": delta, "frames": int(valid.reshape(len(gt), -1).any(1).sum())}
    errors = []
    for t in range(len(gt)):
        if valid[t].any():
            p, _ = _median_scaled(pred[t][valid[t]], gt[t][valid[t]], min_depth, max_depth)
            errors.append(_depth_errors(p, gt[t][valid[t]]))
    abs_rel, delta = np.mean(errors, axis=0)
    return {"abs_rel": float(abs_rel), "delta_1.25": float(delta), "frames": len(errors)}


def best_constant_depth_abs_rel(gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """AbsRel of the best constant depth prediction (ours, a baseline): c minimises mean |c - g| / g, the median of
    g weighted by 1 / g, over pixels with a finite gt in (MIN_DEPTH, MAX_DEPTH). The floor a depth model must
    beat; compare it with the clip-median AbsRel (a constant is scale-free)."""
    gt = np.asarray(gt, np.float64)
    m = _as_mask(mask, gt.shape) & np.isfinite(gt) & (gt > MIN_DEPTH) & (gt < MAX_DEPTH)
    _nonempty(m, "depth pixels")
    g = np.sort(gt[m])
    w = 1.0 / g
    cdf = np.cumsum(w)
    c = g[np.searchsorted(cdf, 0.5 * cdf[-1])]
    return float(np.mean(np.abs(c - g) / g))


# ----- 3-D points --------------------------------------------------------------------------------------------------
def median_norm_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """s = median ||gt|| / median ||pred|| over mask (pred, gt [..., 3])."""
    m = _as_mask(mask, gt.shape[:-1])
    _nonempty(m, "points for the scale")
    pn = np.linalg.norm(pred[m], axis=-1)
    gn = np.linalg.norm(gt[m], axis=-1)
    return float(np.median(gn) / max(np.median(pn), 1e-12))


def epe_3d(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """3-D end-point error (ours, for the paper's query mix): mean ||s p - g|| after TAPVid-3D's median-norm
    scaling s = median ||g|| / median ||p||. pred, gt [..., 3]; mask [...]. -> {"epe", "scale"}"""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must be [..., 3] of the same shape, got {pred.shape} and {gt.shape}")
    m = _as_mask(mask, gt.shape[:-1]) & np.isfinite(pred).all(-1) & np.isfinite(gt).all(-1)
    s = median_norm_scale(pred, gt, m)
    return {"epe": float(np.linalg.norm(s * pred[m] - gt[m], axis=-1).mean()), "scale": s}


def visibility_accuracy(pred_visible: np.ndarray, gt_visible: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of queries (within mask) whose predicted visibility (bool) equals the truth (bool)."""
    pred_visible, gt_visible = np.asarray(pred_visible, bool), np.asarray(gt_visible, bool)
    if pred_visible.shape != gt_visible.shape:
        raise ValueError(f"visibility shapes differ: {pred_visible.shape} and {gt_visible.shape}")
    m = _as_mask(mask, gt_visible.shape)
    _nonempty(m, "visibility queries")
    return float(np.mean(pred_visible[m] == gt_visible[m]))


# ----- TAPVid-3D track metrics -----------------------------------------------------------------------------------
def tapvid3d_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    pred_visible: np.ndarray,
    gt_visible: np.ndarray,
    fx: float,
    fy: float,
    scaling: str = "median",
    query_t: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """TAPVid-3D's metrics of one video, as tapnet's ``tapvid3d/evaluation/metrics.py``
    ``compute_tapvid3d_metrics`` computes them (depth-adaptive thresholds).

    The prediction is scaled ("median": s = median ||g|| / median ||p|| over the points visible in both the
    prediction and the truth, one s per video; when there is none, s is NaN and every point and Jaccard score is 0,
    as the official code gives; "per_trajectory": s_n = z_g / z_p of track n at its query frame). A point is within
    threshold d when ||s p - g|| < d z_g / sqrt(fx fy). Then:
    - pts_within_d: within d among ground-truth-visible points (predicted visibility ignored); apd3d their mean;
    - jaccard_d: TP / (gt-visible + FP), TP = within d, visible in both; FP = predicted visible and (occluded in the
      truth or not within d); aj3d (3D-AJ, the benchmark's headline) their mean;
    - occlusion_acc: fraction of points whose predicted visibility equals the truth.

    Args:
        pred, gt: tracks [N, T, 3], each point in frame t's camera.
        pred_visible, gt_visible: [N, T] bool.
        fx, fy: focal lengths in pixels of the metric resolution: the file's fx, fy times 256 / min(H, W)
            (:func:`d4rt.runtime.geometry.short_side_scale`, as ``evaluate_model.py`` does).
        scaling: "median" (the benchmark's default) or "per_trajectory".
        query_t: [N] query frame of each track (needed for "per_trajectory").
        valid: optional [N, T] bool, the annotated entries (PointOdyssey's valids; TAPVid-3D: all). Entries outside
            it weigh 0 everywhere (the official code's evaluation weights). A NaN ground-truth point inside it counts
            as the official code counts it: never within any threshold (a miss when visible, a false positive when
            predicted visible), left out of the median scale; a NaN at a track's query frame makes its
            per-trajectory scale NaN (every point of the track a miss).
    Returns:
        {"apd3d", "aj3d", "occlusion_acc", "pts_within_{d}", "jaccard_{d}" for d in 1, 2, 4, 8, 16, "scale"
        (median; NaN without a co-visible point; per_trajectory: the median of the per-track scales)}.
    """
    if scaling not in TRACK_SCALINGS:
        raise ValueError(f"track scaling {scaling!r} is not one of {TRACK_SCALINGS}")
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt tracks must be [N, T, 3] of one shape, got {pred.shape} and {gt.shape}")
    shape = gt.shape[:2]
    for name, a in (("pred_visible", pred_visible), ("gt_visible", gt_visible), ("valid", valid)):
        if a is not None and np.shape(a) != shape:
            raise ValueError(f"{name} must be [N, T] = {list(shape)}, got {list(np.shape(a))}")
    if not (fx > 0 and fy > 0):
        raise ValueError(f"fx and fy must be positive focal lengths in pixels, got {fx} and {fy}")
    weight = _as_mask(valid, shape).astype(np.float64)
    usable = weight > 0
    gt = np.where(usable[..., None], gt, 0.0)
    pred = np.where(usable[..., None], pred, 0.0)
    visible = np.asarray(gt_visible, bool) & usable
    pred_vis = np.asarray(pred_visible, bool)
    _nonempty(visible, "ground-truth-visible track points")

    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmedian of an all-NaN set: NaN, as the official code
        if scaling == "median":
            both = visible & pred_vis
            norm = lambda x: np.sqrt(np.maximum(1e-12, np.sum(x[both] ** 2, -1)))  # noqa: E731 (official floor)
            # NaN norms (a NaN point) drop out of their own median only, gt's and pred's apart, as nanmedian does
            scale = float(np.nanmedian(norm(gt)) / np.nanmedian(norm(pred))) if both.any() else float("nan")
            s = scale
        else:
            if query_t is None or np.shape(query_t) != shape[:1]:
                raise ValueError(
                    f"per_trajectory scaling needs query_t [N] = [{shape[0]}], the query frame per track")
            q = np.round(np.asarray(query_t)).astype(np.int64)
            if (q < 0).any() or (q >= shape[1]).any():
                raise ValueError(f"query_t must lie in [0, {shape[1]}), got [{q.min()}, {q.max()}]")
            n = np.arange(shape[0])
            s = (np.maximum(gt[n, q, 2], 1e-12) / np.maximum(pred[n, q, 2], 1e-12))[:, None, None]
            scale = float(np.nanmedian(s))

    # NaN (no co-visible point, a NaN ground-truth or predicted point) compares False: not within, a miss
    dist2 = np.sum((s * pred - gt) ** 2, -1)
    unit = gt[..., 2] / np.sqrt(fx * fy)
    out: dict[str, float] = {
        "occlusion_acc": float(np.sum((pred_vis == visible) * weight) / np.sum(weight)),
    }
    n_visible = np.sum(visible * weight)
    for d in TAPVID3D_THRESHOLDS_PX:
        within = dist2 < np.square(d * unit)
        correct = within & visible
        out[f"pts_within_{d}"] = float(np.sum(correct * weight) / n_visible)
        tp = np.sum((correct & pred_vis) * weight)
        fp = np.sum(((~visible | ~within) & pred_vis) * weight)
        out[f"jaccard_{d}"] = float(tp / (n_visible + fp))
    out["apd3d"] = float(np.mean([out[f"pts_within_{d}"] for d in TAPVID3D_THRESHOLDS_PX]))
    out["aj3d"] = float(np.mean([out[f"jaccard_{d}"] for d in TAPVID3D_THRESHOLDS_PX]))
    out["scale"] = scale
    return out


# ----- camera poses ----------------------------------------------------------------------------------------------
def _check_poses(pred_T_wc: np.ndarray, gt_T_wc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_T_wc, gt_T_wc = np.asarray(pred_T_wc, np.float64), np.asarray(gt_T_wc, np.float64)
    if pred_T_wc.shape != gt_T_wc.shape or pred_T_wc.ndim != 3 or pred_T_wc.shape[1:] != (4, 4):
        raise ValueError(f"poses must be [T, 4, 4] of the same shape, got {pred_T_wc.shape} and {gt_T_wc.shape}")
    if len(pred_T_wc) < 3:
        raise ValueError(f"pose metrics need at least 3 frames for the Sim(3) alignment, got {len(pred_T_wc)}")
    if not (np.isfinite(pred_T_wc).all() and np.isfinite(gt_T_wc).all()):
        raise ValueError("poses contain NaN or infinite values")
    return pred_T_wc, gt_T_wc


def _sim3_aligned(pred_T_wc: np.ndarray, gt_T_wc: np.ndarray) -> tuple[np.ndarray, float]:
    """Predicted poses moved by the Sim(3) Umeyama fit of their camera centres onto the truth's (evo
    ``trajectory.align(correct_scale=True)``): R_wc -> R R_wc, c -> s R c + t. -> ([T, 4, 4], s)"""
    s, R, t = umeyama(pred_T_wc[:, :3, 3], gt_T_wc[:, :3, 3], with_scale=True)
    out = pred_T_wc.copy()
    out[:, :3, :3] = R @ pred_T_wc[:, :3, :3]
    out[:, :3, 3] = s * pred_T_wc[:, :3, 3] @ R.T + t
    return out, float(s)


def camera_ate(pred_T_wc: np.ndarray, gt_T_wc: np.ndarray) -> dict[str, float]:
    """Absolute trajectory error: RMSE of camera centres after a Sim(3) Umeyama alignment of the predicted centres
    onto the truth (evo ``main_ape`` with ``PoseRelation.translation_part``, ``align=True, correct_scale=True``).

    Args:
        pred_T_wc, gt_T_wc: [T, 4, 4] camera-to-world poses (any world frame and scale for pred), T >= 3.
    Returns:
        {"ate": RMSE in the ground truth's units, "scale": s of the alignment}.
    """
    pred_T_wc, gt_T_wc = _check_poses(pred_T_wc, gt_T_wc)
    aligned, s = _sim3_aligned(pred_T_wc, gt_T_wc)
    return {"ate": float(np.sqrt(np.mean(np.sum((aligned[:, :3, 3] - gt_T_wc[:, :3, 3]) ** 2, -1)))), "scale": s}


def camera_rpe(pred_T_wc: np.ndarray, gt_T_wc: np.ndarray, delta: int = 1) -> dict[str, float]:
    """Relative pose error between frames i and i + delta after the same Sim(3) alignment as :func:`camera_ate`
    (evo ``main_rpe``: E_i = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j), Q the truth, P the prediction; RMSE over i).

    Returns:
        {"rpe_trans": RMSE of ||translation(E_i)|| (ground-truth units), "rpe_rot_deg": RMSE of the rotation angle
        of E_i in degrees}.
    """
    pred_T_wc, gt_T_wc = _check_poses(pred_T_wc, gt_T_wc)
    if not 1 <= delta < len(gt_T_wc):
        raise ValueError(f"delta must be in [1, {len(gt_T_wc) - 1}] frames, got {delta}")
    P, _ = _sim3_aligned(pred_T_wc, gt_T_wc)
    Q = gt_T_wc
    rel = lambda M: invert_rigid(M[:-delta]) @ M[delta:]  # noqa: E731  [T - delta, 4, 4]
    E = invert_rigid(rel(Q)) @ rel(P)
    cos = np.clip((np.trace(E[:, :3, :3], axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return {
        "rpe_trans": float(np.sqrt(np.mean(np.sum(E[:, :3, 3] ** 2, -1)))),
        "rpe_rot_deg": float(np.sqrt(np.mean(np.degrees(np.arccos(cos)) ** 2))),
    }
