"""Occupancy against ground truth on the synthetic scenes (d4rt/data/synthetic.py: rooms with moving objects):
ground-truth point maps score 1, noise lowers the score, the static map misses moving objects; the alignment of an
up-to-scale prediction; the F-score with a voxel tolerance against a brute-force count."""

import numpy as np
import pytest

from d4rt.data.synthetic import Room, invert_rigid, rotation_from_rotvec
from d4rt.occupancy.grid import (
    Occupancy,
    VoxelGrid,
    ground_truth_occupancy,
    occupancy_from_point_maps,
    point_maps_from_depth,
)
from d4rt.occupancy.metrics import (
    align_to_ground_truth,
    apply_similarity,
    dilate,
    occupancy_scores,
    tolerant_f_score,
    world_points,
)
from d4rt.occupancy.temporal import static_map
from tests.occupancy_scenes import intrinsics, pose, render

VOXEL = 0.2  # a 32 x 32 render of a room ~10 units across: one ray per ~0.1-0.3 units at the walls


@pytest.fixture
def room():
    """A fresh random synthetic room (4 frames at 32 x 32), posed in frame 0's camera."""
    seed = int(np.random.randint(0, 2**31 - 1))
    clip = Room.random(seed, num_frames=4, num_objects=(3, 5)).render_clip(32, 32)
    T_wc = invert_rigid(clip.T_wc[0]) @ clip.T_wc
    xyz_cam, valid = point_maps_from_depth(clip.depth, clip.K)
    gt = ground_truth_occupancy(clip.depth, clip.K, T_wc, VOXEL)
    return clip, T_wc, xyz_cam, valid, gt


def moving_voxels(gt, xyz_cam, T_wc, instance):
    points = world_points(xyz_cam, T_wc)[instance > 0]
    return np.unique(gt.grid.flat_index(np.floor(gt.grid.to_grid_coords(points)).astype(np.int64)))


def test_synthetic_room_ground_truth_noise_and_static_map(room):
    clip, T_wc, xyz_cam, valid, gt = room
    rng = np.random.default_rng(np.random.randint(2**31))
    exact = occupancy_from_point_maps(xyz_cam, T_wc, clip.K, valid.astype(float), VOXEL, grid=gt.grid)
    scores = occupancy_scores(exact, gt)
    assert scores.clip["iou"] == 1.0 and (scores.iou == 1.0).all()
    ious = []
    for sigma in (0.01, 0.05, 0.3):  # log-normal depth noise
        depth = clip.depth * np.exp(sigma * rng.standard_normal(clip.depth.shape))
        ious.append(occupancy_scores(ground_truth_occupancy(depth, clip.K, T_wc, VOXEL, grid=gt.grid), gt).clip["iou"])
    assert 1.0 > ious[0] > ious[1] > ious[2] > 0.0, ious
    # where the objects move, one union over the clip keeps every place they have been
    moving = moving_voxels(gt, xyz_cam, T_wc, clip.instance)
    static_moving = occupancy_scores(static_map(exact), gt, moving)
    assert static_moving.clip["recall"] == 1.0 and static_moving.clip["iou"] < 0.9
    assert occupancy_scores(exact, gt, moving).clip["iou"] == 1.0


@pytest.mark.parametrize("method", ["median", "sim3"])
def test_alignment_undoes_a_similarity(room, method):
    """A prediction that is the truth seen through an unknown similarity (only a scale for "median", whose worlds are
    both frame 0's camera) is brought back onto it: the same grids."""
    clip, T_wc, xyz_cam, valid, gt = room
    rng = np.random.default_rng(np.random.randint(2**31))
    s = rng.uniform(0.2, 5.0)
    if method == "median":
        R, t = np.eye(3), np.zeros(3)
    else:
        R, t = rotation_from_rotvec(rng.normal(size=3)), rng.normal(size=3) * 3
    xyz_pred, T_pred = apply_similarity(xyz_cam, T_wc, s, R, t)
    np.testing.assert_allclose(world_points(xyz_pred, T_pred), s * world_points(xyz_cam, T_wc) @ R.T + t, atol=1e-9)
    conf = rng.uniform(0.6, 1.0, valid.shape)
    xyz, T_al, fit = align_to_ground_truth(xyz_pred, T_pred, xyz_cam, T_wc, valid, method)
    assert fit["scale"] == pytest.approx(1 / s, rel=1e-9)
    np.testing.assert_allclose(T_al, T_wc, atol=1e-9)
    np.testing.assert_allclose(xyz, xyz_cam, atol=1e-9)
    pred = occupancy_from_point_maps(xyz, T_al, clip.K, conf, VOXEL, grid=gt.grid)
    assert occupancy_scores(pred, gt).clip["iou"] > 0.999  # round-off may move a point across a voxel face


def test_alignment_bad_input(room):
    clip, T_wc, xyz_cam, valid, _ = room
    moved = clip.T_wc  # the renderer's world, not frame 0's camera
    with pytest.raises(ValueError, match=r"T_wc_gt\[0\] is not the identity.*sim3"):
        align_to_ground_truth(xyz_cam, T_wc, xyz_cam, moved, valid, "median")
    with pytest.raises(ValueError, match="unknown alignment"):
        align_to_ground_truth(xyz_cam, T_wc, xyz_cam, T_wc, valid, "icp")
    with pytest.raises(ValueError, match="valid must be"):
        align_to_ground_truth(xyz_cam, T_wc, xyz_cam, T_wc, valid[0], "sim3")
    with pytest.raises(ValueError, match="one shape"):
        align_to_ground_truth(xyz_cam[:, :4], T_wc, xyz_cam, T_wc, valid, "sim3")
    with pytest.raises(ValueError, match="at least 3 valid pixels"):
        align_to_ground_truth(xyz_cam, T_wc, xyz_cam, T_wc, np.zeros_like(valid), "sim3")
    with pytest.raises(ValueError, match="no valid pixel"):
        align_to_ground_truth(xyz_cam, T_wc, xyz_cam, T_wc, np.zeros_like(valid), "median")


@pytest.mark.parametrize("radius", [1, 2])
def test_dilate_matches_brute_force(radius):
    rng = np.random.default_rng(np.random.randint(2**31))
    mask = rng.random((7, 5, 9)) < 0.05
    ref = np.zeros_like(mask)
    for i, j, k in zip(*np.nonzero(mask), strict=True):
        ref[
            max(i - radius, 0) : i + radius + 1,
            max(j - radius, 0) : j + radius + 1,
            max(k - radius, 0) : k + radius + 1,
        ] = True
    np.testing.assert_array_equal(dilate(mask, radius), ref)
    np.testing.assert_array_equal(dilate(mask, 0), mask)


def brute_force_tolerant(pred, gt, tolerance):
    """Precision / recall counts of tolerant_f_score, voxel pair by voxel pair (Chebyshev distance)."""
    counts = np.zeros(4)
    for t in range(gt.num_frames):
        scored = np.intersect1d(pred.occupied[t], gt.observed(t))
        p_ijk, g_ijk = gt.grid.voxel_coords(pred.occupied[t]), gt.grid.voxel_coords(gt.occupied[t])
        near = np.abs(p_ijk[:, None] - g_ijk[None]).max(-1) <= tolerance  # [P, G]
        precise = set(pred.occupied[t][near.any(1)])
        counts += [sum(v in precise for v in scored), len(scored), near.any(0).sum(), len(gt.occupied[t])]
    return counts[0] / counts[1], counts[2] / counts[3]


def test_tolerant_f_score():
    rng = np.random.default_rng(np.random.randint(2**31))
    S, v = 24, 0.1
    K = intrinsics(S, 20.0)
    T_wc = np.stack([pose(t=rng.uniform(-0.05, 0.05, 3)) for _ in range(2)])
    wall = 2.0 + rng.uniform(0.02, 0.08)  # a wall z = const: one layer of voxels
    depth = np.stack([render(K, T_wc[t], S, planes=[(2, wall)])[1] for t in range(2)])
    gt = ground_truth_occupancy(depth, K, T_wc, v)
    layer = np.unique(gt.grid.voxel_coords(np.concatenate(gt.occupied))[:, 2])
    assert len(layer) == 1
    # the wall predicted one layer nearer the camera: every voxel wrong, every voxel within one voxel
    nearer = Occupancy(gt.grid, [a - 1 for a in gt.occupied], [np.array([], np.int64)] * 2, T_wc, K)
    assert occupancy_scores(nearer, gt).clip["f_score"] == 0.0
    assert tolerant_f_score(nearer, gt, 0)["clip"]["f_score"] == 0.0
    f1 = tolerant_f_score(nearer, gt, 1)
    assert f1["clip"] == {"precision": 1.0, "recall": 1.0, "f_score": 1.0}
    # a noisy prediction: tolerance 0 equals the exact scores; larger tolerances, brute force
    xyz, valid = point_maps_from_depth(depth, K)
    noisy = occupancy_from_point_maps(
        xyz + rng.normal(scale=v, size=xyz.shape), T_wc, K, valid.astype(float), v, grid=gt.grid
    )
    exact = occupancy_scores(noisy, gt)
    f0 = tolerant_f_score(noisy, gt, 0)
    for key in ("precision", "recall", "f_score"):
        np.testing.assert_allclose(f0[key], getattr(exact, key))
        assert f0["clip"][key] == pytest.approx(exact.clip[key])
    for tolerance in (1, 2):
        f = tolerant_f_score(noisy, gt, tolerance)
        assert (f["clip"]["precision"], f["clip"]["recall"]) == pytest.approx(
            brute_force_tolerant(noisy, gt, tolerance)
        )
    assert exact.clip["f_score"] < tolerant_f_score(noisy, gt, 1)["clip"]["f_score"] < 1.0
    with pytest.raises(ValueError, match="tolerance must be a whole number"):
        tolerant_f_score(noisy, gt, 0.5)
    with pytest.raises(ValueError, match="tolerance must be a whole number"):
        tolerant_f_score(noisy, gt, -1)
    other = Occupancy(VoxelGrid(np.zeros(3), 0.3, (2, 2, 2)), noisy.occupied, noisy.free, T_wc, K)
    with pytest.raises(ValueError, match="different voxel grids"):
        tolerant_f_score(other, gt)
