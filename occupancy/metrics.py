"""Scores of predicted per-frame occupancy against ground truth, and the alignment of an up-to-scale prediction to
it. Numpy only.

Each frame is scored over its observed region: the voxels the ground truth observes at that frame (occupied or
free). Inside it, the predicted occupied voxels P are compared with the ground-truth occupied voxels G:
IoU = |P & G| / |P | G|, precision = |P & G| / |P|, recall = |P & G| / |G|, F-score = 2 |P & G| / (|P| + |G|)
(voxel sets, no distance tolerance). A predicted voxel the ground truth does not observe is not scored. The clip
scores pool the counts over frames (not a mean of per-frame ratios), so large frames weigh more. A ratio whose
denominator is zero is NaN.

D4RT predicts geometry up to one scale per clip (and its world is its own frame 0's camera), so a prediction is
brought into the ground truth's world and units before it is voxelised (:func:`align_to_ground_truth`): either the
median depth ratio (the depth metrics' scale: s = median z_gt / median z_pred), or a Sim(3) Umeyama fit of the
posed point maps onto the ground truth's (:func:`d4rt.runtime.geometry.umeyama`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d4rt.occupancy.grid import Occupancy, _check_poses
from d4rt.runtime.geometry import transform_points, umeyama

ALIGNMENTS = ("median", "sim3")


def _ratios(tp, fp, fn):
    tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "iou": tp / (tp + fp + fn),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f_score": 2 * tp / (2 * tp + fp + fn),
        }


@dataclass
class OccupancyScores:
    """Per-frame counts and ratios ([T] arrays) and the clip's pooled ratios."""

    true_positive: np.ndarray
    false_positive: np.ndarray
    false_negative: np.ndarray
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f_score: np.ndarray
    clip: dict[str, float]

    def summary(self) -> dict[str, float]:
        """Clip scores plus the mean of the per-frame IoU and F-score."""
        return {
            **self.clip,
            "mean_frame_iou": float(np.nanmean(self.iou)),
            "mean_frame_f": float(np.nanmean(self.f_score)),
        }


def _check_pair(pred: Occupancy, gt: Occupancy, region: np.ndarray | None) -> np.ndarray | None:
    if not pred.grid.same_as(gt.grid):
        raise ValueError(
            f"prediction and ground truth use different voxel grids ({pred.grid.shape} at {pred.grid.voxel_size:g} "
            f"vs {gt.grid.shape} at {gt.grid.voxel_size:g}); build one with grid=other.grid"
        )
    if pred.num_frames != gt.num_frames:
        raise ValueError(f"prediction has {pred.num_frames} frames, ground truth {gt.num_frames}; they must match")
    if region is not None:
        region = np.asarray(region, np.int64)
        if region.ndim != 1 or (np.diff(region) <= 0).any():
            raise ValueError("region must be a sorted 1-D array of unique flat voxel indices (np.unique gives one)")
    return region


def occupancy_scores(pred: Occupancy, gt: Occupancy, region: np.ndarray | None = None) -> OccupancyScores:
    """IoU / precision / recall / F-score of occupied voxels, per frame and over the clip (see module docstring).

    Both must share the grid: build the prediction with ``grid=gt.grid`` (or the other way round).
    region: optional sorted unique flat voxel indices to score only (e.g. the voxels moving objects sweep through);
    it is intersected with each frame's observed region.
    """
    region = _check_pair(pred, gt, region)
    T = gt.num_frames
    tp, fp, fn = np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T, np.int64)
    for t in range(T):
        pred_occ, gt_occ, gt_free = pred.occupied[t], gt.occupied[t], gt.free[t]
        if region is not None:
            pred_occ, gt_occ, gt_free = (
                np.intersect1d(a, region, assume_unique=True) for a in (pred_occ, gt_occ, gt_free)
            )
        hit = np.intersect1d(pred_occ, gt_occ, assume_unique=True).size
        wrong = np.intersect1d(pred_occ, gt_free, assume_unique=True).size
        tp[t], fp[t], fn[t] = hit, wrong, gt_occ.size - hit
    per_frame = _ratios(tp, fp, fn)
    clip = {k: float(v) for k, v in _ratios(tp.sum(), fp.sum(), fn.sum()).items()}
    return OccupancyScores(tp, fp, fn, clip=clip, **per_frame)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Boolean [nx, ny, nz] grown by ``radius`` voxels in every direction (a (2 radius + 1)^3 cube, separable)."""
    out = np.asarray(mask, bool).copy()
    for axis in range(3):
        grown = out.copy()
        n = out.shape[axis]
        for shift in range(1, min(radius, n - 1) + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, n - shift), slice(shift, n)
            grown[tuple(hi)] |= out[tuple(lo)]
            grown[tuple(lo)] |= out[tuple(hi)]
        out = grown
    return out


def tolerant_f_score(
    pred: Occupancy, gt: Occupancy, tolerance: int = 1, region: np.ndarray | None = None
) -> dict[str, np.ndarray | float]:
    """F-score of occupied voxels with a distance tolerance, per frame and pooled over the clip.

    Precision: the fraction of predicted occupied voxels in the frame's observed region (as in
    :func:`occupancy_scores`) that lie within ``tolerance`` voxels (Chebyshev: the (2 k + 1)^3 cube) of a
    ground-truth occupied voxel. Recall: the fraction of ground-truth occupied voxels within ``tolerance`` of a
    predicted occupied voxel (anywhere: a surface predicted a voxel too deep lies behind it, unobserved). With
    ``tolerance=0`` these are :func:`occupancy_scores`' precision and recall. ``region`` restricts the voxels scored
    (both sides), not their neighbours.

    Returns:
        {"precision", "recall", "f_score"}: [T] arrays, and "clip": the same three from counts pooled over frames.
    """
    region = _check_pair(pred, gt, region)
    if not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise ValueError(f"tolerance must be a whole number of voxels >= 0, got {tolerance!r}")
    T, n = gt.num_frames, gt.grid.num_voxels
    counts = np.zeros((T, 4), np.int64)  # precise, scored predictions, recalled, ground-truth occupied
    for t in range(T):
        pred_occ = np.intersect1d(pred.occupied[t], gt.observed(t), assume_unique=True)
        gt_occ = gt.occupied[t]
        if region is not None:
            pred_occ = np.intersect1d(pred_occ, region, assume_unique=True)
            gt_occ = np.intersect1d(gt_occ, region, assume_unique=True)
        near_gt, near_pred = np.zeros(n, bool), np.zeros(n, bool)
        near_gt[gt.occupied[t]] = True
        near_pred[pred.occupied[t]] = True
        near_gt = dilate(near_gt.reshape(gt.grid.shape), tolerance).ravel()
        near_pred = dilate(near_pred.reshape(gt.grid.shape), tolerance).ravel()
        counts[t] = near_gt[pred_occ].sum(), pred_occ.size, near_pred[gt_occ].sum(), gt_occ.size

    def ratios(c):
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, recall = c[..., 0] / c[..., 1], c[..., 2] / c[..., 3]
            f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
            return precision, recall, np.where(np.isnan(precision + recall), np.nan, f)

    precision, recall, f = ratios(counts.astype(np.float64))
    clip = dict(zip(("precision", "recall", "f_score"), map(float, ratios(counts.sum(0).astype(float))), strict=True))
    return {"precision": precision, "recall": recall, "f_score": f, "clip": clip}


# ----- aligning a prediction to ground truth ----------------------------------------------------------------------


def world_points(xyz_cam: np.ndarray, T_wc: np.ndarray) -> np.ndarray:
    """Point maps [T, ..., 3] in each frame's camera -> the same points in the world, [T, ..., 3] float64."""
    xyz = np.asarray(xyz_cam, np.float64)
    flat = xyz.reshape(len(xyz), -1, 3)
    return transform_points(np.asarray(T_wc, np.float64)[:, None], flat).reshape(xyz.shape)


def apply_similarity(xyz_cam: np.ndarray, T_wc: np.ndarray, s: float, R: np.ndarray, t: np.ndarray):
    """Move a clip by the world similarity x -> s R x + t: each camera's point map is scaled by s and each pose
    becomes [R R_c | s R c + t] (still rigid), so the posed points move exactly as the world does.

    Returns xyz_cam [T, ..., 3] and T_wc [T, 4, 4] (float64).
    """
    T_new = np.array(T_wc, np.float64)
    T_new[:, :3, :3] = R @ T_new[:, :3, :3]
    T_new[:, :3, 3] = s * T_new[:, :3, 3] @ np.asarray(R).T + t
    return s * np.asarray(xyz_cam, np.float64), T_new


def align_to_ground_truth(
    xyz_cam: np.ndarray,
    T_wc: np.ndarray,
    xyz_cam_gt: np.ndarray,
    T_wc_gt: np.ndarray,
    valid: np.ndarray,
    method: str = "median",
):
    """Bring predicted point maps and poses into the ground truth's world and units, pixel by pixel.

    Args:
        xyz_cam, xyz_cam_gt: [T, H, W, 3] point maps in each frame's own camera, on the same pixel grid.
        T_wc, T_wc_gt: [T, 4, 4] camera-to-world poses; for "median" both worlds must be frame 0's camera
            (T_wc[0] = I: express the ground truth as inv(T_wc_gt[0]) @ T_wc_gt).
        valid: [T, H, W] bool, the pixels to fit on (ground truth valid, prediction confident).
        method: "median": s = median z_gt / median z_pred over valid pixels with z > 0, no rotation; "sim3": the
            Umeyama similarity taking every valid predicted world point onto its ground-truth world point.
    Returns:
        xyz_cam [T, H, W, 3], T_wc [T, 4, 4] aligned (see :func:`apply_similarity`), and {"scale", "R", "t"}.
    """
    if method not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {method!r}; choose one of {ALIGNMENTS}")
    xyz, xyz_gt = np.asarray(xyz_cam, np.float64), np.asarray(xyz_cam_gt, np.float64)
    if xyz.shape != xyz_gt.shape or xyz.ndim < 3 or xyz.shape[-1] != 3:
        raise ValueError(
            f"xyz_cam and xyz_cam_gt must be point maps [T, H, W, 3] of one shape, got {xyz.shape} and {xyz_gt.shape}"
        )
    valid = np.asarray(valid, bool)
    if valid.shape != xyz.shape[:-1]:
        raise ValueError(f"valid must be {xyz.shape[:-1]} (one flag per pixel), got {valid.shape}")
    T_wc, T_wc_gt = _check_poses(T_wc, len(xyz)), _check_poses(T_wc_gt, len(xyz))
    if method == "median":
        for name, poses in (("T_wc", T_wc), ("T_wc_gt", T_wc_gt)):
            if not np.allclose(poses[0], np.eye(4), atol=1e-6):
                raise ValueError(
                    f"median alignment compares worlds through frame 0's camera, but {name}[0] is not "
                    "the identity; pass inv(T_wc[0]) @ T_wc, or use method='sim3'"
                )
        use = valid & (xyz[..., 2] > 0) & (xyz_gt[..., 2] > 0)
        if not use.any():
            raise ValueError("no valid pixel with positive depth in both point maps to take the scale from")
        s, R, t = float(np.median(xyz_gt[..., 2][use]) / np.median(xyz[..., 2][use])), np.eye(3), np.zeros(3)
    else:
        if valid.sum() < 3:
            raise ValueError(f"sim3 alignment needs at least 3 valid pixels, got {int(valid.sum())}")
        s, R, t = umeyama(world_points(xyz, T_wc)[valid], world_points(xyz_gt, T_wc_gt)[valid], with_scale=True)
    aligned_xyz, aligned_T_wc = apply_similarity(xyz, T_wc, s, R, t)
    return aligned_xyz, aligned_T_wc, {"scale": float(s), "R": R, "t": np.asarray(t, np.float64)}
