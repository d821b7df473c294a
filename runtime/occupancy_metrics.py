"""Scores of predicted per-frame occupancy against ground truth. Numpy only.

Each frame is scored over its observed region: the voxels the ground truth observes at that frame (occupied or
free). Inside it, the predicted occupied voxels P are compared with the ground-truth occupied voxels G:
IoU = |P & G| / |P | G|, precision = |P & G| / |P|, recall = |P & G| / |G|, F-score = 2 |P & G| / (|P| + |G|)
(voxel sets, no distance tolerance). A predicted voxel the ground truth does not observe is not scored. The clip
scores pool the counts over frames (not a mean of per-frame ratios), so large frames weigh more. A ratio whose
denominator is zero is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d4rt.runtime.occupancy import Occupancy


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


def occupancy_scores(pred: Occupancy, gt: Occupancy, region: np.ndarray | None = None) -> OccupancyScores:
    """IoU / precision / recall / F-score of occupied voxels, per frame and over the clip (see module docstring).

    Both must share the grid: build the prediction with ``grid=gt.grid`` (or the other way round).
    region: optional sorted unique flat voxel indices to score only (e.g. the voxels moving objects sweep through);
    it is intersected with each frame's observed region.
    """
    if not pred.grid.same_as(gt.grid):
        raise ValueError(
            f"prediction and ground truth use different voxel grids ({pred.grid.shape} at {pred.grid.voxel_size:g} "
            f"vs {gt.grid.shape} at {gt.grid.voxel_size:g}); build one with grid=other.grid"
        )
    if pred.num_frames != gt.num_frames:
        raise ValueError(f"prediction has {pred.num_frames} frames, ground truth {gt.num_frames}; they must match")
    T = gt.num_frames
    if region is not None:
        region = np.asarray(region, np.int64)
        if region.ndim != 1 or (np.diff(region) <= 0).any():
            raise ValueError("region must be a sorted 1-D array of unique flat voxel indices (np.unique gives one)")
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
