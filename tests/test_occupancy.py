"""Per-frame occupancy: ray casting against a brute-force reference, exact counts on a plane and a box, ground
truth, noise, the moving box against the static map, the D4RT-scene glue, and bad input."""

import numpy as np
import pytest

from d4rt.occupancy.grid import (
    FREE,
    OCCUPIED,
    UNOBSERVED,
    VoxelGrid,
    cast_rays,
    dense_point_maps,
    ground_truth_occupancy,
    intrinsics_from_point_maps,
    occupancy_from_point_maps,
    occupancy_from_scene,
    point_maps_from_depth,
)
from d4rt.occupancy.metrics import occupancy_scores
from d4rt.occupancy.temporal import static_map
from tests.occupancy_scenes import (
    AnalyticRuntime,
    Scene,
    intrinsics,
    pose,
    reference_cast,
    render,
    render_clip,
    rotation_y,
)


def random_grid(rng, shape=(11, 9, 13)):
    voxel = rng.uniform(0.05, 0.3)
    return VoxelGrid(rng.normal(size=3), voxel, shape)


@pytest.mark.parametrize("camera", ["inside", "outside"])
def test_cast_rays_matches_brute_force(camera):
    rng = np.random.default_rng(np.random.randint(2**31))
    grid = random_grid(rng)
    size = np.array(grid.shape) * grid.voxel_size
    n = 150
    if camera == "inside":
        origins = grid.origin + rng.uniform(0.1, 0.9, 3) * size
    else:  # far outside: every ray is clipped to the grid box; a third of the points also lie outside
        origins = grid.origin + np.array([-0.7, 1.4, 0.5]) * size
    points = grid.origin + rng.uniform(-0.2, 1.2, (n, 3)) * size
    occupied, free = cast_rays(grid, origins, points)
    ref_occupied, ref_free = reference_cast(grid.origin, grid.voxel_size, grid.shape, origins, points)
    np.testing.assert_array_equal(occupied, ref_occupied)
    np.testing.assert_array_equal(free, ref_free)
    assert len(free) > 50 and len(occupied) > 10


def test_cast_rays_many_cameras_match_brute_force():
    rng = np.random.default_rng(np.random.randint(2**31))
    grid = random_grid(rng)
    size = np.array(grid.shape) * grid.voxel_size
    origins = grid.origin + rng.uniform(0, 1, (120, 3)) * size
    points = grid.origin + rng.uniform(0, 1, (120, 3)) * size
    occupied, free = cast_rays(grid, origins, points)
    ref = reference_cast(grid.origin, grid.voxel_size, grid.shape, origins, points)
    np.testing.assert_array_equal(occupied, ref[0])
    np.testing.assert_array_equal(free, ref[1])


def test_single_ray_along_the_axis():
    """Hand count: a ray from a voxel centre straight down +z to a point 7 voxels away frees exactly 7 voxels."""
    rng = np.random.default_rng(np.random.randint(2**31))
    v = rng.uniform(0.05, 0.2)
    xyz = np.array([[[[0.0, 0.0, 7 * v + rng.uniform(-0.3, 0.3) * v]]]])  # [T=1, 1, 1, 3]
    occ = occupancy_from_point_maps(xyz, pose()[None], intrinsics(1, 1.0), voxel_size=v)
    assert occ.grid.shape == (1, 1, 8)
    assert occ.counts().tolist() == [[1, 7, 0]]
    assert occ.dense(0)[0, 0].tolist() == [FREE] * 7 + [OCCUPIED]


def plane_scene(rng, n_side=9, depth_voxels=10, voxel=0.1):
    """A fronto-parallel plane: one point in each voxel of an n x n patch, the camera jittered in its voxel."""
    v = voxel
    half = n_side // 2
    i, j = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
    pts = np.stack([i, j, np.full_like(i, depth_voxels)], -1) * v + rng.uniform(-0.4, 0.4, (n_side, n_side, 3)) * v
    cam = rng.uniform(-0.4, 0.4, 3) * v
    return pts, cam


def test_plane_exact_counts():
    rng = np.random.default_rng(np.random.randint(2**31))
    v, n, k0 = 0.1, 9, 10
    pts_world, cam = plane_scene(rng, n, k0, v)
    T_wc = pose(t=cam)[None]
    xyz_cam = (pts_world - cam)[None]  # identity rotation
    occ = occupancy_from_point_maps(xyz_cam, T_wc, intrinsics(n, 10.0), voxel_size=v)
    g = occ.grid
    # lattice: voxel centres at multiples of v, so the grid spans exactly the plane's patch and the camera voxel
    assert g.shape == (n, n, k0 + 1)
    np.testing.assert_allclose(g.origin, [-(n // 2 + 0.5) * v, -(n // 2 + 0.5) * v, -0.5 * v])
    occupied, free, unobserved = occ.counts()[0]
    assert occupied == n * n  # one point per plane voxel
    state = occ.dense(0)
    assert (state[:, :, k0] == OCCUPIED).all() and (state[:, :, :k0] != OCCUPIED).all()
    assert state[n // 2, n // 2, :k0].tolist() == [FREE] * k0  # the central column, by hand
    _, ref_free = reference_cast(g.origin, v, g.shape, cam, pts_world)
    assert free == len(ref_free) and np.array_equal(occ.free[0], ref_free)
    assert unobserved == g.num_voxels - n * n - len(ref_free) > 0
    # corners of the grid next to the camera are outside every ray's cone: unobserved
    assert state[0, 0, 0] == UNOBSERVED and state[-1, -1, 0] == UNOBSERVED


def test_box_exact_counts():
    """A box in front of the camera, the camera within its x/y extent: only the front face is seen, so the
    occupied voxels are exactly the face's voxels, and everything from the face back to the box's far side (the
    grid ends there) is unobserved."""
    rng = np.random.default_rng(np.random.randint(2**31))
    v, S = 0.1, 96
    # face edges kept >= 0.03 inside their voxel columns (pixel footprint at the face ~ 0.017 < 0.03)
    lo = np.array([-0.31, -0.29, 2.03]) + rng.uniform(-0.01, 0.01, 3)
    hi = np.array([0.39, 0.33, 2.62]) + rng.uniform(-0.01, 0.01, 3)
    cam = rng.uniform(-0.03, 0.03, 3)
    K = intrinsics(S, 120.0)
    T_wc = pose(t=cam)[None]
    xyz_cam, _ = render(K, T_wc[0], S, boxes=[(lo, hi)])
    conf = np.isfinite(xyz_cam[..., 0]).astype(float)
    grid = VoxelGrid.covering(np.stack([cam, lo, hi]), v)
    occ = occupancy_from_point_maps(np.nan_to_num(xyz_cam)[None], T_wc, K, conf[None], voxel_size=v, grid=grid)
    face_cols = [int(np.floor(hi[a] / v + 0.5) - np.floor(lo[a] / v + 0.5) + 1) for a in (0, 1)]
    assert occ.counts()[0, 0] == face_cols[0] * face_cols[1]
    state = occ.dense(0)
    k_face = int(np.floor((lo[2] - grid.origin[2]) / v))
    assert (state[:, :, k_face] == OCCUPIED).sum() == face_cols[0] * face_cols[1]
    assert grid.shape[2] - k_face - 1 >= 5  # the box's depth in layers
    assert (state[:, :, k_face + 1 :] == UNOBSERVED).all()  # inside the box: never observed
    points = (np.nan_to_num(xyz_cam) + cam)[conf > 0]
    ref_occ, ref_free = reference_cast(grid.origin, v, grid.shape, cam, points)
    np.testing.assert_array_equal(occ.occupied[0], ref_occ)
    np.testing.assert_array_equal(occ.free[0], ref_free)
    assert occ.counts()[0].sum() == grid.num_voxels


def moving_scene(rng, size=48, frames=3, shift=0.6):
    """A box sliding along x in front of a back wall, seen by a camera that turns and moves a little."""
    K = intrinsics(size, size * 0.8)
    T_wc = np.stack([pose(rotation_y(0.05 * t), (0.05 * t, 0.0, 0.02 * t)) for t in range(frames)])
    T_wc[:, :3, 3] += rng.uniform(-0.01, 0.01, (frames, 3))
    box = np.array([[-0.5, -0.3, 1.6], [0.0, 0.3, 2.1]]) + rng.uniform(-0.02, 0.02, (2, 3))
    boxes = [[(box[0] + [shift * t, 0, 0], box[1] + [shift * t, 0, 0])] for t in range(frames)]
    planes = [(2, 3.0 + rng.uniform(-0.02, 0.02))]
    xyz_cam, depth = render_clip(K, T_wc, size, boxes, planes)
    return K, T_wc, xyz_cam, depth


def test_ground_truth_point_maps_give_iou_one():
    rng = np.random.default_rng(np.random.randint(2**31))
    K, T_wc, xyz_cam, depth = moving_scene(rng)
    gt = ground_truth_occupancy(depth, K, T_wc, voxel_size=0.1)
    valid = np.isfinite(xyz_cam[..., 0])
    pred = occupancy_from_point_maps(np.nan_to_num(xyz_cam), T_wc, K, valid.astype(float), 0.1, grid=gt.grid)
    scores = occupancy_scores(pred, gt)
    assert scores.clip["iou"] == 1.0 and scores.clip["f_score"] == 1.0
    assert (scores.iou == 1.0).all() and (scores.false_positive == 0).all()
    for t in range(len(T_wc)):
        np.testing.assert_array_equal(pred.occupied[t], gt.occupied[t])
        np.testing.assert_array_equal(pred.free[t], gt.free[t])


def test_iou_falls_as_noise_grows():
    rng = np.random.default_rng(np.random.randint(2**31))
    K, T_wc, xyz_cam, depth = moving_scene(rng, size=64, frames=2)
    v = 0.1
    gt = ground_truth_occupancy(depth, K, T_wc, voxel_size=v)
    valid = np.isfinite(xyz_cam[..., 0]).astype(float)
    ious = []
    for sigma in (0.2 * v, 1.0 * v, 3.0 * v):
        noisy = np.nan_to_num(xyz_cam) + rng.normal(scale=sigma, size=xyz_cam.shape)
        pred = occupancy_from_point_maps(noisy, T_wc, K, valid, v, grid=gt.grid)
        ious.append(occupancy_scores(pred, gt).clip["iou"])
    assert 1.0 > ious[0] > ious[1] > ious[2] > 0.0, ious


def test_moving_box_per_frame_beats_static_map():
    """The issue's core claim: per-frame grids follow a moving object, one union over the clip smears it."""
    rng = np.random.default_rng(np.random.randint(2**31))
    K, T_wc, xyz_cam, depth = moving_scene(rng, size=48, frames=2, shift=0.7)
    v = 0.1
    gt = ground_truth_occupancy(depth, K, T_wc, voxel_size=v)
    valid = np.isfinite(xyz_cam[..., 0]).astype(float)
    pred = occupancy_from_point_maps(np.nan_to_num(xyz_cam), T_wc, K, valid, v, grid=gt.grid)
    per_frame = occupancy_scores(pred, gt)
    static = occupancy_scores(static_map(pred), gt)
    assert per_frame.clip["iou"] == 1.0
    assert static.clip["iou"] < 1.0 and (static.false_positive >= 10).all()  # each frame sees the other's box
    # where the box stood at frame 0 and the wall is seen through at frame 1: occupied, then free
    left = np.setdiff1d(pred.occupied[0], pred.occupied[1])
    freed = np.intersect1d(left, pred.free[1])
    assert len(freed) > 10
    assert np.isin(freed, static_map(pred).occupied[1]).all()  # the static map still calls them occupied


def test_metric_scale_and_max_range():
    rng = np.random.default_rng(np.random.randint(2**31))
    K, T_wc, xyz_cam, _ = moving_scene(rng, size=32, frames=1)
    valid = np.isfinite(xyz_cam[..., 0]).astype(float)
    xyz = np.nan_to_num(xyz_cam)
    scale = rng.uniform(1.5, 3.0)
    a = occupancy_from_point_maps(xyz, T_wc, K, valid, voxel_size=0.1 * scale, metric_scale=scale)
    T_scaled = T_wc.copy()
    T_scaled[:, :3, 3] *= scale
    b = occupancy_from_point_maps(xyz * scale, T_scaled, K, valid, voxel_size=0.1 * scale)
    assert a.grid.same_as(b.grid) and np.array_equal(a.occupied[0], b.occupied[0])
    np.testing.assert_array_equal(a.free[0], b.free[0])
    near = occupancy_from_point_maps(xyz, T_wc, K, valid, voxel_size=0.1, max_range=2.5)
    far_z = near.grid.centers(near.occupied[0])[:, 2]
    assert far_z.max() < 2.5 + 0.1  # the back wall at z = 3 is dropped, the box kept
    assert len(near.occupied[0]) > 0


def test_low_confidence_points_are_dropped():
    rng = np.random.default_rng(np.random.randint(2**31))
    K, T_wc, xyz_cam, depth = moving_scene(rng, size=32, frames=1)
    xyz = np.nan_to_num(xyz_cam)
    conf = np.where(np.isfinite(xyz_cam[..., 0]), rng.uniform(0.6, 1.0, depth.shape), 0.0)
    drop = np.zeros(depth.shape, bool)
    drop[:, :, :16] = True  # the left half of the image becomes unsure
    conf_low = np.where(drop, 0.3, conf)
    full = occupancy_from_point_maps(xyz, T_wc, K, conf, 0.1, min_confidence=0.5)
    half = occupancy_from_point_maps(xyz, T_wc, K, conf_low, 0.1, min_confidence=0.5, grid=full.grid)
    only_right = occupancy_from_point_maps(xyz[:, :, 16:], T_wc, K, conf[:, :, 16:], 0.1, grid=full.grid)
    np.testing.assert_array_equal(half.occupied[0], only_right.occupied[0])
    np.testing.assert_array_equal(half.free[0], only_right.free[0])
    assert len(half.occupied[0]) < len(full.occupied[0])


def test_point_maps_from_depth_unprojects():
    rng = np.random.default_rng(np.random.randint(2**31))
    S = 16
    K = intrinsics(S, rng.uniform(10, 30))
    depth = rng.uniform(1, 4, (2, S, S))
    depth[0, 3, 5] = np.inf
    depth[1, 0, 0] = 0.0
    xyz, valid = point_maps_from_depth(depth, K)
    assert not valid[0, 3, 5] and not valid[1, 0, 0] and valid.sum() == 2 * S * S - 2
    uvw = xyz[valid] @ K.T  # project back: pixel * depth
    rows, cols = np.nonzero(valid)[1:]
    np.testing.assert_allclose(uvw[:, 0] / uvw[:, 2], cols, atol=1e-9)
    np.testing.assert_allclose(uvw[:, 1] / uvw[:, 2], rows, atol=1e-9)
    np.testing.assert_allclose(uvw[:, 2], depth[valid])


def test_occupancy_from_scene_matches_ground_truth():
    rng = np.random.default_rng(np.random.randint(2**31))
    S, T = 40, 2
    K = intrinsics(S, 32.0)
    T_wc = np.stack([pose(rotation_y(0.04 * t), (0.06 * t, 0.0, 0.0)) for t in range(T)])
    boxes = [[(np.array([-0.4 + 0.5 * t, -0.3, 1.5]), np.array([0.1 + 0.5 * t, 0.3, 2.0]))] for t in range(T)]
    planes = [(2, 2.8 + rng.uniform(-0.02, 0.02))]
    rt = AnalyticRuntime(K, T_wc, boxes, planes, S)
    _, depth = render_clip(K, T_wc, S, boxes, planes)
    gt = ground_truth_occupancy(depth, K, T_wc, voxel_size=0.1)
    occ = occupancy_from_scene(rt, Scene(T, S), voxel_size=0.1, progress=False, grid=gt.grid)
    assert rt.calls == [(S * S, 0), (S * S, 1)]
    assert occupancy_scores(occ, gt).clip["iou"] > 0.99  # float32 uv and xyz: a point may cross a boundary
    np.testing.assert_allclose(occ.K, np.broadcast_to(K, (T, 3, 3)), rtol=1e-5)  # from the same point maps
    np.testing.assert_array_equal(occ.T_wc, T_wc)
    xyz, conf, uv = dense_point_maps(rt, Scene(T, S), size=8, progress=False)
    assert xyz.shape == (T, 8, 8, 3) and conf.shape == (T, 8, 8) and uv.shape == (64, 2)
    with pytest.warns(DeprecationWarning, match="grid_size= is deprecated.*use size="):
        np.testing.assert_array_equal(dense_point_maps(rt, Scene(T, S), grid_size=8, progress=False)[0], xyz)


# ----- bad input -------------------------------------------------------------------------------------------------


def valid_inputs(rng, T=2, S=4):
    xyz = rng.uniform(-1, 1, (T, S, S, 3)) + [0, 0, 3]
    return xyz, np.tile(np.eye(4), (T, 1, 1)), intrinsics(S, 4.0)


def test_bad_voxel_size():
    rng = np.random.default_rng(np.random.randint(2**31))
    xyz, T_wc, K = valid_inputs(rng)
    for bad in (0.0, -0.05, np.nan, np.inf):
        with pytest.raises(ValueError, match="voxel_size must be a positive"):
            occupancy_from_point_maps(xyz, T_wc, K, voxel_size=bad)


def test_empty_scene():
    rng = np.random.default_rng(np.random.randint(2**31))
    xyz, T_wc, K = valid_inputs(rng)
    with pytest.raises(ValueError, match="empty"):
        occupancy_from_point_maps(np.zeros((0, 4, 4, 3)), np.zeros((0, 4, 4)), K)
    with pytest.raises(ValueError, match="empty"):
        occupancy_from_point_maps(np.zeros((2, 0, 4, 3)), T_wc, K)
    with pytest.raises(ValueError, match="empty.*confidence"):
        occupancy_from_point_maps(xyz, T_wc, K, confidence=np.full(xyz.shape[:-1], 0.1))
    with pytest.raises(ValueError, match="empty"):
        ground_truth_occupancy(np.full((2, 4, 4), np.inf), K, T_wc)


def test_nan_points():
    rng = np.random.default_rng(np.random.randint(2**31))
    xyz, T_wc, K = valid_inputs(rng)
    xyz[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite points \(first in frame 1\).*confidence 0"):
        occupancy_from_point_maps(xyz, T_wc, K)
    T_bad = T_wc.copy()
    T_bad[0, 0, 3] = np.nan
    with pytest.raises(ValueError, match="T_wc contains NaN"):
        occupancy_from_point_maps(np.nan_to_num(xyz), T_bad, K)


def test_mismatched_shapes():
    rng = np.random.default_rng(np.random.randint(2**31))
    xyz, T_wc, K = valid_inputs(rng)
    with pytest.raises(ValueError, match=r"T_wc must be \[T, 4, 4\] = \[2, 4, 4\]"):
        occupancy_from_point_maps(xyz, T_wc[:1], K)
    with pytest.raises(ValueError, match="confidence must match"):
        occupancy_from_point_maps(xyz, T_wc, K, confidence=np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"K must be \[3, 3\] or \[T, 3, 3\]"):
        occupancy_from_point_maps(xyz, T_wc, np.eye(4))
    with pytest.raises(ValueError, match=r"xyz_cam must be \[T, H, W, 3\]"):
        occupancy_from_point_maps(xyz[..., :2], T_wc, K)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        occupancy_from_point_maps(xyz, T_wc, K, confidence=np.full(xyz.shape[:-1], 3.0))
    with pytest.raises(ValueError, match="max_voxels"):
        occupancy_from_point_maps(xyz * 1000, T_wc, K, voxel_size=0.01)


def test_intrinsics_from_point_maps():
    rng = np.random.default_rng(np.random.randint(2**31))
    S, T = 16, 2
    K = intrinsics(S, rng.uniform(10, 30))
    depth = rng.uniform(1, 4, (T, S, S))
    xyz, _ = point_maps_from_depth(depth, K)
    uv = np.stack(np.meshgrid(np.arange(S), np.arange(S), indexing="xy"), -1).reshape(-1, 2) / (S - 1)
    np.testing.assert_allclose(intrinsics_from_point_maps(xyz, uv, S), np.broadcast_to(K, (T, 3, 3)), rtol=1e-9)
    mirrored = xyz.copy()
    mirrored[1, ..., 0] *= -1  # frame 1 seen in a mirror: no pinhole camera makes it
    with pytest.raises(ValueError, match=r"do not fit a pinhole camera: frame 1 gives focal lengths fx = -"):
        intrinsics_from_point_maps(mirrored, uv, S)
