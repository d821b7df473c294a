"""Metrics on inputs whose values are known by hand (and against brute force where a search is easy)."""

import math

import numpy as np
import pytest

from d4rt.data.synthetic import rigid, rotation_from_rotvec
from d4rt.evaluation.metrics import (
    apd3d,
    best_constant_depth_abs_rel,
    camera_ate,
    depth_metrics,
    epe_3d,
    visibility_accuracy,
)


def test_depth_metrics_by_hand():
    gt = np.array([1.0, 2.0, 4.0])
    pred = np.array([1.0, 1.0, 1.0])  # s = median(gt) / median(pred) = 2 -> [2, 2, 2]
    d = depth_metrics(pred, gt)
    assert d["scale"] == pytest.approx(2.0)
    assert d["abs_rel"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert d["delta_1.25"] == pytest.approx(1 / 3)  # ratios 2, 1, 0.5
    # invalid pixels (gt <= 0, NaN) and masked ones are ignored
    d2 = depth_metrics(np.array([1.0, 1.0, 1.0, 5.0, np.nan]), np.array([1.0, 2.0, 4.0, 0.0, 3.0]))
    assert d2["abs_rel"] == pytest.approx(d["abs_rel"])
    masked = depth_metrics(np.array([1.0, 1.0, 1.0, 9.0]), np.array([1.0, 2.0, 4.0, 1.0]), mask=[1, 1, 1, 0])
    assert masked["abs_rel"] == pytest.approx(d["abs_rel"])


def test_depth_metrics_scale_invariant_random():
    gt = np.random.uniform(0.5, 10.0, (4, 16, 16))
    d = depth_metrics(gt * np.random.uniform(0.1, 10.0), gt)
    assert d["abs_rel"] < 1e-12 and d["delta_1.25"] == 1.0


def test_best_constant_baseline():
    assert best_constant_depth_abs_rel(np.array([1.0, 2.0, 4.0])) == pytest.approx((0 + 0.5 + 0.75) / 3)  # c = 1
    gt = np.random.uniform(0.5, 12.0, 300)
    grid = np.linspace(0.5, 12.0, 20001)
    brute = min(np.mean(np.abs(c - gt) / gt) for c in grid[::10])
    best = best_constant_depth_abs_rel(gt)
    assert best <= brute + 1e-9 and best == pytest.approx(brute, rel=1e-3)
    # the median-aligned constant is never better than the best constant
    assert depth_metrics(np.ones_like(gt), gt)["abs_rel"] >= best - 1e-12


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


def test_apd3d_by_hand():
    """16 visible points at z = 10 m with f = 100 px: 1 px is 0.1 m. 10 exact, 6 off by 0.5 .. 20 px sideways."""
    fx = fy = 100.0
    gt = np.tile([0.0, 0.0, 10.0], (19, 1))
    offsets_px = [0.5, 1.5, 3.0, 5.0, 10.0, 20.0]
    pred = gt.copy()
    pred[10:16, 0] = np.array(offsets_px) * 0.1
    visible = np.ones(19, bool)
    visible[16:] = False
    pred[16:] = [50.0, 50.0, 1.0]  # invisible points do not count, whatever their error
    a = apd3d(pred, gt, visible, fx, fy)
    assert a["scale"] == pytest.approx(1.0)
    for d, within in zip((1, 2, 4, 8, 16), (11, 12, 13, 14, 15)):
        assert a[f"pts_within_{d}"] == pytest.approx(within / 16)
    assert a["apd3d"] == pytest.approx((11 + 12 + 13 + 14 + 15) / 80)
    # global scale does not matter; a farther focal length (smaller pixels) is stricter
    assert apd3d(pred * 3.0, gt, visible, fx, fy)["apd3d"] == pytest.approx(a["apd3d"])
    assert apd3d(pred, gt, visible, 2 * fx, 2 * fy)["apd3d"] < a["apd3d"]


def test_apd3d_uses_points_visible_in_both_for_the_scale():
    gt = np.random.uniform(1, 5, (8, 6, 3))
    pred = gt * 2.0
    pred_visible = np.ones((8, 6), bool)
    pred[0] *= 100.0  # wildly wrong where the prediction says "occluded"
    pred_visible[0] = False
    a = apd3d(pred, gt, np.ones((8, 6), bool), 50.0, 50.0, pred_visible=pred_visible)
    assert a["scale"] == pytest.approx(0.5)
    assert a["apd3d"] == pytest.approx(7 / 8)


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


def test_visibility_accuracy_and_errors():
    assert visibility_accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert visibility_accuracy([1, 0, 1, 1], [1, 1, 1, 0], mask=[1, 0, 1, 0]) == 1.0
    with pytest.raises(ValueError, match="selects nothing"):
        visibility_accuracy([1], [1], mask=[0])
    with pytest.raises(ValueError, match="same shape"):
        depth_metrics(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"\[T, 4, 4\]"):
        camera_ate(np.ones((3, 3, 3)), np.ones((3, 3, 3)))
