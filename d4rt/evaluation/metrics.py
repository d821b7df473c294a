"""Evaluation metrics (numpy, float64). D4RT predicts geometry up to one scale per clip, so every 3-D metric first
aligns the scale; camera poses are aligned with a similarity transform (the house's one Umeyama,
:func:`d4rt.runtime.geometry.umeyama`).

- depth: AbsRel = mean |s d_pred - d_gt| / d_gt and delta < 1.25 = fraction with max(s d / g, g / (s d)) < 1.25,
  s = median(d_gt) / median(d_pred) (median scale alignment).
- 3-D end-point error: mean ||s p - g||, s = median ||g|| / median ||p|| (TAPVid-3D's "median" scaling).
- APD3D (TAPVid-3D): with the same scaling over points visible in both, the fraction of ground-truth-visible
  points within delta * z_gt / sqrt(fx fy) of the truth, averaged over delta in {1, 2, 4, 8, 16} pixels.
- camera ATE: RMSE of camera centres after a Sim(3) Umeyama alignment of the predicted centres onto the truth.
- visibility accuracy: fraction of (valid) queries whose predicted visibility equals the truth.
"""

from __future__ import annotations

import numpy as np

from d4rt.runtime.geometry import umeyama

APD_THRESHOLDS_PX = (1, 2, 4, 8, 16)


def _as_mask(mask, shape) -> np.ndarray:
    return np.ones(shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), shape)


def _nonempty(mask: np.ndarray, what: str) -> None:
    if not mask.any():
        raise ValueError(f"no valid {what} to evaluate: the mask selects nothing")


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Depth AbsRel and delta < 1.25 after median scale alignment.

    Args:
        pred, gt: depths of the same shape (any, e.g. [T, H, W]); gt > 0 where valid.
        mask: optional bool of the same shape; pixels with gt <= 0, pred <= 0 or non-finite values are dropped.
    Returns:
        {"abs_rel", "delta_1.25", "scale"} (scale s multiplies pred).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt depth must have the same shape, got {pred.shape} and {gt.shape}")
    m = _as_mask(mask, gt.shape) & np.isfinite(pred) & np.isfinite(gt) & (gt > 0) & (pred > 0)
    _nonempty(m, "depth pixels (gt > 0 and pred > 0)")
    p, g = pred[m], gt[m]
    s = np.median(g) / np.median(p)
    ratio = s * p / g
    return {
        "abs_rel": float(np.mean(np.abs(ratio - 1.0))),
        "delta_1.25": float(np.mean(np.maximum(ratio, 1.0 / ratio) < 1.25)),
        "scale": float(s),
    }


def best_constant_depth_abs_rel(gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """AbsRel of the best constant depth prediction: c minimises mean |c - g| / g, the median of g weighted by
    1 / g. The baseline a depth model must beat."""
    gt = np.asarray(gt, np.float64)
    m = _as_mask(mask, gt.shape) & np.isfinite(gt) & (gt > 0)
    _nonempty(m, "depth pixels (gt > 0)")
    g = np.sort(gt[m])
    w = 1.0 / g
    cdf = np.cumsum(w)
    c = g[np.searchsorted(cdf, 0.5 * cdf[-1])]
    return float(np.mean(np.abs(c - g) / g))


def median_norm_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """s = median ||gt|| / median ||pred|| over mask (pred, gt [..., 3])."""
    m = _as_mask(mask, gt.shape[:-1])
    _nonempty(m, "points for the scale")
    pn = np.linalg.norm(pred[m], axis=-1)
    gn = np.linalg.norm(gt[m], axis=-1)
    return float(np.median(gn) / max(np.median(pn), 1e-12))


def epe_3d(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """3-D end-point error after median-norm scale alignment. pred, gt [..., 3]; mask [...]. -> {"epe", "scale"}"""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must be [..., 3] of the same shape, got {pred.shape} and {gt.shape}")
    m = _as_mask(mask, gt.shape[:-1]) & np.isfinite(pred).all(-1) & np.isfinite(gt).all(-1)
    s = median_norm_scale(pred, gt, m)
    return {"epe": float(np.linalg.norm(s * pred[m] - gt[m], axis=-1).mean()), "scale": s}


def apd3d(
    pred: np.ndarray,
    gt: np.ndarray,
    gt_visible: np.ndarray,
    fx: float,
    fy: float,
    pred_visible: np.ndarray | None = None,
) -> dict[str, float]:
    """TAPVid-3D's average percent of points within a depth-adaptive threshold.

    Args:
        pred, gt: [..., 3] points in each frame's camera (e.g. tracks [N, T, 3]).
        gt_visible: [...] bool, the points that count.
        fx, fy: focal lengths in pixels of the image the thresholds are measured in (TAPVid-3D: 256 x 256 scale).
        pred_visible: [...] bool predicted visibility; the scale uses points visible in both (all gt-visible
            points when None).
    Returns:
        {"apd3d", "pts_within_1", ..., "pts_within_16", "scale"} (fractions in [0, 1]).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must be [..., 3] of the same shape, got {pred.shape} and {gt.shape}")
    vis = _as_mask(gt_visible, gt.shape[:-1])
    _nonempty(vis, "visible track points")
    both = vis & _as_mask(pred_visible, gt.shape[:-1])
    s = median_norm_scale(pred, gt, both if both.any() else vis)
    dist = np.linalg.norm(s * pred - gt, axis=-1)[vis]
    unit = gt[..., 2][vis] / np.sqrt(fx * fy)  # metres per pixel at the point's depth
    out = {f"pts_within_{d}": float(np.mean(dist < d * unit)) for d in APD_THRESHOLDS_PX}
    out["apd3d"] = float(np.mean([out[f"pts_within_{d}"] for d in APD_THRESHOLDS_PX]))
    out["scale"] = s
    return out


def camera_ate(pred_T_wc: np.ndarray, gt_T_wc: np.ndarray) -> dict[str, float]:
    """Absolute trajectory error of camera centres after a Sim(3) Umeyama alignment.

    Args:
        pred_T_wc, gt_T_wc: [T, 4, 4] camera-to-world poses (any world frame and scale for pred), T >= 3.
    Returns:
        {"ate": RMSE in the ground truth's units, "scale": s of the alignment}.
    """
    pred_T_wc, gt_T_wc = np.asarray(pred_T_wc, np.float64), np.asarray(gt_T_wc, np.float64)
    if pred_T_wc.shape != gt_T_wc.shape or pred_T_wc.shape[1:] != (4, 4):
        raise ValueError(f"poses must be [T, 4, 4] of the same shape, got {pred_T_wc.shape} and {gt_T_wc.shape}")
    src, dst = pred_T_wc[:, :3, 3], gt_T_wc[:, :3, 3]
    s, R, t = umeyama(src, dst, with_scale=True)
    aligned = s * src @ R.T + t
    return {"ate": float(np.sqrt(np.mean(np.sum((aligned - dst) ** 2, -1)))), "scale": float(s)}


def visibility_accuracy(pred_visible: np.ndarray, gt_visible: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of queries (within mask) whose predicted visibility (bool) equals the truth (bool)."""
    pred_visible, gt_visible = np.asarray(pred_visible, bool), np.asarray(gt_visible, bool)
    if pred_visible.shape != gt_visible.shape:
        raise ValueError(f"visibility shapes differ: {pred_visible.shape} and {gt_visible.shape}")
    m = _as_mask(mask, gt_visible.shape)
    _nonempty(m, "visibility queries")
    return float(np.mean(pred_visible[m] == gt_visible[m]))
