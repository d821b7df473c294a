"""Metrics on inputs whose values are known by hand (and against brute force where a search is easy)."""

import math

import numpy as np
import pytest

from d4rt.data.synthetic import rotation_from_rotvec
from d4rt.evaluation.metrics import (
    best_constant_depth_abs_rel,
    camera_ate,
    camera_rpe,
    depth_metrics,
    epe_3d,
    tapvid3d_metrics,
    visibility_accuracy,
)
from d4rt.runtime.geometry import rigid, short_side_scale


def monodepth2_reference(pred, gt, min_depth=1e-3, max_depth=80.0):
    """monodepth2 evaluate_depth.py for one image, written out step by step in float64."""
    pred, gt = np.asarray(pred, np.float64).ravel(), np.asarray(gt, np.float64).ravel()
    keep = (gt > min_depth) & (gt < max_depth)
    pred, gt = pred[keep], gt[keep]
    ratio = np.median(gt) / np.median(pred)
    pred = pred * ratio
    pred[pred < min_depth] = min_depth
    pred[pred > max_depth] = max_depth
    thresh = np.maximum(gt / pred, pred / gt)
    return np.mean(np.abs(gt - pred) / gt), np.mean(thresh < 1.25)


def test_depth_metrics_by_hand_frame_and_clip_median():
    """Frame 0: gt 1, 2, 4, pred 1 -> s = 2 -> 2, 2, 2: AbsRel (1 + 0 + 0.5) / 3, delta 1/3 (ratios 2, 1, 0.5).
    Frame 1: gt 1, pred 3 -> s = 1/3: exact. Clip: median gt 1, median pred 2 -> s = 0.5: preds 0.5, 0.5, 0.5,
    1.5, 1.5, 1.5 -> AbsRel (0.5 + 0.75 + 0.875 + 3 * 0.5) / 6, delta 0 (ratios 2, 4, 8, 1.5, 1.5, 1.5)."""
    gt = np.array([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]])
    pred = np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    f = depth_metrics(pred, gt, scaling="frame_median")
    assert f["abs_rel"] == pytest.approx((0.5 + 0.0) / 2) and f["delta_1.25"] == pytest.approx((1 / 3 + 1) / 2)
    assert f["frames"] == 2
    c = depth_metrics(pred, gt, scaling="clip_median")
    assert c["abs_rel"] == pytest.approx((0.5 + 0.75 + 0.875 + 1.5) / 6) and c["delta_1.25"] == 0.0
    # invalid ground truth (0, NaN, beyond 80 m) and masked pixels are not scored
    gt2 = np.array([[1.0, 2.0, 4.0, 0.0, np.nan, 90.0]])
    pred2 = np.array([[1.0, 1.0, 1.0, 5.0, 7.0, 9.0]])
    assert depth_metrics(pred2, gt2)["abs_rel"] == pytest.approx(0.5)
    assert depth_metrics(np.array([[1.0, 1.0, 1.0, 9.0]]), np.array([[1.0, 2.0, 4.0, 1.0]]),
                         mask=[[1, 1, 1, 0]])["abs_rel"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="scaling"):
        depth_metrics(pred, gt, scaling="median")


def test_depth_negative_predictions_count_clamped():
    """10 % negative predictions are clamped to 1 mm after scaling and still count (monodepth2), not dropped."""
    T, P = 3, 400
    gt = np.random.uniform(0.5, 10.0, (T, P))
    pred = gt * np.random.uniform(0.7, 1.4, (T, P)) * np.random.uniform(0.1, 10.0)
    bad = np.random.rand(T, P) < 0.1
    pred[bad] = -np.random.uniform(0.1, 5.0, bad.sum())
    ref = np.mean([monodepth2_reference(pred[t], gt[t]) for t in range(T)], axis=0)
    d = depth_metrics(pred, gt, scaling="frame_median")
    assert d["abs_rel"] == pytest.approx(ref[0], rel=1e-12) and d["delta_1.25"] == pytest.approx(ref[1], rel=1e-12)
    clip_ref = monodepth2_reference(pred, gt)
    c = depth_metrics(pred, gt, scaling="clip_median")
    assert c["abs_rel"] == pytest.approx(clip_ref[0], rel=1e-12)
    dropped = depth_metrics(np.where(bad, np.nan, pred), gt, mask=~bad, scaling="frame_median")
    assert d["abs_rel"] > dropped["abs_rel"] + 0.05  # dropping them would flatter the model
    # a prediction whose median is <= 0 has no positive scale: every pixel counts as 1 mm
    g = np.array([[1.0, 2.0, 4.0]])
    worst = depth_metrics(-g, g)
    assert worst["abs_rel"] == pytest.approx(np.mean((g - 1e-3) / g)) and worst["delta_1.25"] == 0.0


def test_depth_metrics_scale_invariant_random():
    gt = np.random.uniform(0.5, 10.0, (4, 16, 16))
    for scaling in ("frame_median", "clip_median"):
        d = depth_metrics(gt * np.random.uniform(0.1, 10.0), gt, scaling=scaling)
        assert d["abs_rel"] < 1e-12 and d["delta_1.25"] == 1.0


def test_best_constant_baseline():
    assert best_constant_depth_abs_rel(np.array([1.0, 2.0, 4.0])) == pytest.approx((0 + 0.5 + 0.75) / 3)  # c = 1
    gt = np.random.uniform(0.5, 12.0, 300)
    grid = np.linspace(0.5, 12.0, 20001)
    brute = min(np.mean(np.abs(c - gt) / gt) for c in grid[::10])
    best = best_constant_depth_abs_rel(gt)
    assert best <= brute + 1e-9 and best == pytest.approx(brute, rel=1e-3)
    # the median-aligned constant is never better than the best constant
    assert depth_metrics(np.ones((1, 300)), gt[None], scaling="clip_median")["abs_rel"] >= best - 1e-12


def test_epe_by_hand():
    gt = np.eye(3)  # norms 1
    pred = np.diag([2.0, 2.0, 2.2])  # median norm 2 -> s = 0.5 -> errors 0, 0, 0.1
    e = epe_3d(pred, gt)
    assert e["scale"] == pytest.approx(0.5)
    assert e["epe"] == pytest.approx(0.1 / 3)
    pts = np.random.randn(50, 3)
    assert epe_3d(pts * 7.0, pts)["epe"] < 1e-12
    with pytest.raises(ValueError, match="same shape"):
        epe_3d(pts[:, :2], pts[:, :2])


def tapvid3d_reference(pred, gt, pred_vis, gt_vis, fx, fy, scaling="median", query_t=None, weight=None):
    """TAPVid-3D's definitions (tapnet tapvid3d/evaluation/metrics.py) re-derived point by point in float64.
    pred, gt [N, T, 3]; visibilities [N, T]; weight [N, T] (1: scored)."""
    N, T = gt_vis.shape
    weight = np.ones((N, T)) if weight is None else weight
    if scaling == "median":
        pn = [np.linalg.norm(pred[n, t]) for n in range(N) for t in range(T)
              if gt_vis[n, t] and pred_vis[n, t] and weight[n, t]]
        gn = [np.linalg.norm(gt[n, t]) for n in range(N) for t in range(T)
              if gt_vis[n, t] and pred_vis[n, t] and weight[n, t]]
        scale = np.full(N, np.median(gn) / np.median(pn) if pn else np.nan)
    else:
        scale = np.array([gt[n, query_t[n], 2] / pred[n, query_t[n], 2] for n in range(N)])
    res = {"occlusion_acc": sum(weight[n, t] * (pred_vis[n, t] == gt_vis[n, t]) for n in range(N) for t in range(T))
           / weight.sum()}
    apd, aj = [], []
    for d in (1, 2, 4, 8, 16):
        within_vis = fp = vis = tp = 0.0
        for n in range(N):
            for t in range(T):
                w = weight[n, t]
                thresh = d * gt[n, t, 2] / math.sqrt(fx * fy)
                within = np.linalg.norm(scale[n] * pred[n, t] - gt[n, t]) < thresh
                vis += w * gt_vis[n, t]
                within_vis += w * (within and gt_vis[n, t])
                tp += w * (within and gt_vis[n, t] and pred_vis[n, t])
                fp += w * (pred_vis[n, t] and (not gt_vis[n, t] or not within))
        apd.append(within_vis / vis)
        aj.append(tp / (vis + fp))
    res["apd3d"], res["aj3d"] = float(np.mean(apd)), float(np.mean(aj))
    return res


def test_tapvid3d_by_hand():
    """16 visible points at z = 10 m with f = 100 px: 1 px is 0.1 m. 10 exact, 6 off by 0.5 .. 20 px sideways;
    3 occluded points predicted visible (false positives for the Jaccard), far off."""
    fx = fy = 100.0
    gt = np.tile([0.0, 0.0, 10.0], (19, 1))[:, None]  # [N = 19, T = 1, 3]
    pred = gt.copy()
    pred[10:16, 0, 0] = np.array([0.5, 1.5, 3.0, 5.0, 10.0, 20.0]) * 0.1
    visible = np.ones((19, 1), bool)
    visible[16:] = False
    pred[16:] = [50.0, 50.0, 10.0]
    pred_visible = np.ones((19, 1), bool)
    pred_visible[14] = False  # within 8 px of the truth but said occluded: counts for APD, not for the Jaccard
    m = tapvid3d_metrics(pred, gt, pred_visible, visible, fx, fy)
    within = (11, 12, 13, 14, 15)
    for d, w in zip((1, 2, 4, 8, 16), within):
        assert m[f"pts_within_{d}"] == pytest.approx(w / 16)
    assert m["apd3d"] == pytest.approx(sum(within) / 80)
    # TP: within and predicted visible (point 14 is not); FP: 3 occluded + the predicted-visible points too far
    tp = [11, 12, 13, 14, 14]  # d = 16: point 14 (10 px) is within but said occluded
    fp = [3 + 4, 3 + 3, 3 + 2, 3 + 1, 3 + 1]  # offsets >= d among the predicted-visible 1.5, 3, 5, 20 px
    assert m["aj3d"] == pytest.approx(np.mean([a / (16 + b) for a, b in zip(tp, fp)]))
    assert m["occlusion_acc"] == pytest.approx(15 / 19)  # 16 - 1 visible right, 0 of 3 occluded right
    assert m["scale"] == pytest.approx(1.0)
    # a global scale does not matter under median scaling; a longer focal length (smaller pixels) is stricter
    assert tapvid3d_metrics(pred * 3.0, gt, pred_visible, visible, fx, fy)["apd3d"] == pytest.approx(m["apd3d"])
    assert tapvid3d_metrics(pred, gt, pred_visible, visible, 2 * fx, 2 * fy)["apd3d"] < m["apd3d"]


def test_tapvid3d_against_the_definition_random():
    N, T = 12, 7
    gt = np.random.uniform(-2, 2, (N, T, 3))
    gt[..., 2] = np.random.uniform(1, 8, (N, T))
    pred = (gt + np.random.normal(0, 0.05, gt.shape)) * np.random.uniform(0.2, 5)
    pred[..., 2] = np.abs(pred[..., 2]) + 0.1
    gt_vis, pred_vis = np.random.rand(N, T) < 0.8, np.random.rand(N, T) < 0.7
    gt_vis[:, 0] = True
    query_t = np.random.randint(0, T, N)
    weight = (np.random.rand(N, T) < 0.9).astype(float)
    weight[:, 0] = 1
    weight[np.arange(N), query_t] = 1  # a track's query frame is annotated
    fx, fy = np.random.uniform(100, 400, 2)
    for scaling in ("median", "per_trajectory"):
        for w in (None, weight):
            m = tapvid3d_metrics(pred, gt, pred_vis, gt_vis, fx, fy, scaling, query_t=query_t,
                                 valid=None if w is None else w > 0)
            ref = tapvid3d_reference(pred, gt, pred_vis, gt_vis, fx, fy, scaling, query_t, w)
            for k in ("apd3d", "aj3d", "occlusion_acc"):
                assert m[k] == pytest.approx(ref[k], abs=1e-12), (scaling, k)


def test_tapvid3d_uses_points_visible_in_both_for_the_scale():
    gt = np.random.uniform(1, 5, (8, 6, 3))
    pred = gt * 2.0
    pred_visible = np.ones((8, 6), bool)
    pred[0] *= 100.0  # wildly wrong where the prediction says "occluded"
    pred_visible[0] = False
    m = tapvid3d_metrics(pred, gt, pred_visible, np.ones((8, 6), bool), 50.0, 50.0)
    assert m["scale"] == pytest.approx(0.5)
    assert m["apd3d"] == pytest.approx(7 / 8)


def test_tapvid3d_no_co_visible_point_scores_zero():
    """No point visible in both: the official median scale is NaN and every point / Jaccard score is 0."""
    gt = np.random.uniform(1, 5, (5, 4, 3))
    gt_vis = np.ones((5, 4), bool)
    m = tapvid3d_metrics(gt.copy(), gt, np.zeros((5, 4), bool), gt_vis, 50.0, 50.0)
    assert math.isnan(m["scale"]) and m["apd3d"] == 0.0 and m["aj3d"] == 0.0
    assert m["occlusion_acc"] == 0.0  # all visible, all predicted occluded


def test_tapvid3d_focal_of_a_non_square_clip():
    """640 x 360: TAPVid-3D scales fx and fy by 256 / 360 (short side to 256). A point 1.2 official pixels off is
    outside the 1-px threshold; with (S - 1) / (W - 1), (S - 1) / (H - 1) per axis it would be inside (1.34x looser)."""
    H, W, f = 360, 640, 500.0
    assert short_side_scale(H, W) == pytest.approx(256 / 360)
    f256 = f * 256 / 360
    z = 10.0
    gt = np.array([[[0.0, 0.0, z]], [[1.0, 0.0, z]], [[0.0, 1.0, z]]])  # three points so the median scale is 1
    pred = gt.copy()
    pred[0, 0, 0] += 1.2 * z / f256
    vis = np.ones((3, 1), bool)
    official = tapvid3d_metrics(pred, gt, vis, vis, f256, f256)
    assert official["pts_within_1"] == pytest.approx(2 / 3) and official["pts_within_2"] == 1.0
    # the old per-axis focal lengths make the 1-px threshold sqrt(f256^2 / (fx_old fy_old)) = 1.336 official pixels
    # (hand arithmetic); the code shows it: 1.2 px off is inside it, 1.45 px off (8 % beyond 1.336) still outside
    fx_old, fy_old = f * 255 / 639, f * 255 / 359
    assert tapvid3d_metrics(pred, gt, vis, vis, fx_old, fy_old)["pts_within_1"] == 1.0
    pred[0, 0, 0] = 1.45 * z / f256
    assert tapvid3d_metrics(pred, gt, vis, vis, fx_old, fy_old)["pts_within_1"] == pytest.approx(2 / 3)


def test_tapvid3d_invalid_entries_weigh_nothing():
    gt = np.random.uniform(1, 5, (6, 5, 3))
    vis = np.ones((6, 5), bool)
    pred = gt * 1.7
    valid = np.ones((6, 5), bool)
    valid[2, 3] = False
    gt_nan, pred_bad = gt.copy(), pred.copy()
    gt_nan[2, 3] = np.nan
    pred_bad[2, 3] = 1e6  # an entry outside valid cannot cost anything
    m = tapvid3d_metrics(pred_bad, gt_nan, vis, vis, 80.0, 80.0, valid=valid)
    assert m["apd3d"] == 1.0 and m["aj3d"] == 1.0 and m["occlusion_acc"] == 1.0
    # inside valid (TAPVid-3D: everywhere), a NaN point scores as the official code scores it: never within, so
    # visible it is a miss. Both medians drop it (pred NaN there too): s = 1 / 1.7 exactly and the 29 other points
    # are within every threshold: pts_within = 29 / 30; TP = 29, FP = 1 (predicted visible, not within): 29 / 31
    pred_nan = pred.copy()
    pred_nan[2, 3] = np.nan
    for scaling in ("median", "per_trajectory"):
        m = tapvid3d_metrics(pred_nan, gt_nan, vis, vis, 80.0, 80.0, scaling, query_t=np.zeros(6, int))
        assert m["apd3d"] == pytest.approx(29 / 30, abs=1e-15) and m["aj3d"] == pytest.approx(29 / 31, abs=1e-15)
        assert m["occlusion_acc"] == 1.0
    with pytest.raises(ValueError, match="query_t"):
        tapvid3d_metrics(pred, gt, vis, vis, 80.0, 80.0, scaling="per_trajectory")


def test_tapvid3d_per_trajectory_scaling_by_hand():
    """Each track scaled by z_gt / z_pred at its query frame: track 0 x2 everywhere, track 1 x3 -> both exact."""
    gt = np.random.uniform(1, 5, (2, 4, 3))
    pred = gt.copy()
    pred[0] /= 2.0
    pred[1] /= 3.0
    vis = np.ones((2, 4), bool)
    m = tapvid3d_metrics(pred, gt, vis, vis, 100.0, 100.0, scaling="per_trajectory", query_t=np.array([1, 3]))
    assert m["apd3d"] == 1.0 and m["scale"] == pytest.approx(2.5)
    assert tapvid3d_metrics(pred, gt, vis, vis, 100.0, 100.0)["apd3d"] < 1.0  # one median scale cannot fit both


def test_camera_ate_by_hand():
    """Square corners vs a saddle off by +-e: the best Sim(3) is a pure scale s = 2 / (2 + e^2)."""
    e = 0.1
    gt = np.array([[1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]], float)
    pred = gt + np.array([[0, 0, e], [0, 0, -e], [0, 0, e], [0, 0, -e]])
    s = 2 / (2 + e * e)
    expected = math.sqrt(2 * (1 - s) ** 2 + s * s * e * e)
    poses = lambda c: np.stack([rigid(np.eye(3), x) for x in c])  # noqa: E731
    a = camera_ate(poses(pred), poses(gt))
    assert a["ate"] == pytest.approx(expected, rel=1e-9)
    assert a["scale"] == pytest.approx(s, rel=1e-9)


def test_camera_ate_zero_under_similarity():
    T = 12
    gt = np.stack([rigid(rotation_from_rotvec(np.random.randn(3)), np.random.randn(3) * 3) for _ in range(T)])
    s, R, t = np.random.uniform(0.2, 5), rotation_from_rotvec(np.random.randn(3)), np.random.randn(3)
    world = rigid(R, t)
    pred = world @ gt
    pred[:, :3, 3] *= s
    a = camera_ate(pred, gt)
    assert a["ate"] < 1e-9 and a["scale"] == pytest.approx(1 / s)


def test_camera_rpe_by_hand():
    """Exact centres, frame 2 turned by theta about z: pairs (1, 2) and (2, 3) are off by theta in rotation, and
    (2, 3) by 2 sin(theta / 2) |d_xy| in translation (d = c3 - c2 = (-1, 0, 0.5))."""
    theta = 0.3
    centres = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.5]], float)
    gt = np.stack([rigid(np.eye(3), c) for c in centres])
    pred = gt.copy()
    pred[2, :3, :3] = rotation_from_rotvec(np.array([0.0, 0.0, theta]))
    r = camera_rpe(pred, gt)
    assert r["rpe_trans"] == pytest.approx(math.sqrt((2 * math.sin(theta / 2)) ** 2 / 3), rel=1e-9)
    assert r["rpe_rot_deg"] == pytest.approx(math.degrees(theta) * math.sqrt(2 / 3), rel=1e-9)
    assert camera_ate(pred, gt)["ate"] < 1e-12
    # a similarity of the whole prediction changes nothing
    world = rigid(rotation_from_rotvec(np.random.randn(3)), np.random.randn(3))
    moved = world @ pred
    moved[:, :3, 3] *= 2.5
    r2 = camera_rpe(moved, gt)
    assert r2["rpe_trans"] == pytest.approx(r["rpe_trans"], rel=1e-6, abs=1e-9)
    assert r2["rpe_rot_deg"] == pytest.approx(r["rpe_rot_deg"], rel=1e-6)


def test_visibility_accuracy_and_errors():
    assert visibility_accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert visibility_accuracy([1, 0, 1, 1], [1, 1, 1, 0], mask=[1, 0, 1, 0]) == 1.0
    with pytest.raises(ValueError, match="selects nothing"):
        visibility_accuracy([1], [1], mask=[0])
    with pytest.raises(ValueError, match="same shape|one shape"):
        depth_metrics(np.ones((1, 3)), np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"\[T, 4, 4\]"):
        camera_ate(np.ones((3, 3, 3)), np.ones((3, 3, 3)))
