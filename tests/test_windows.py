"""Long videos in aligned windows (paper App. B) on an oracle: exact answers from a rendered room, each window in
its own camera 0 and at its own random scale. The chained result must recover the ground truth exactly."""

import numpy as np
import pytest

from d4rt.runtime.geometry import grid_uv
from d4rt.runtime.windows import align_sim3, plan_windows
from d4rt.data.oracle_video import ground_truth_poses, oracle_runtime, render


@pytest.mark.parametrize(
    "frames, window, overlap, expected",
    [
        (8, 8, 2, [(0, 8)]),
        (7, 8, 2, [(0, 6), (1, 7)]),  # odd and shorter than T: two windows, every frame answered, none repeated
        (3, 8, 2, [(0, 2), (1, 3)]),
        (20, 8, 2, [(0, 8), (6, 14), (12, 20)]),
        (23, 8, 2, [(0, 8), (6, 14), (12, 20), (15, 23)]),  # the last window ends on the last frame
        (2, 4, 1, [(0, 2)]),
    ],
)
def test_plan_windows(frames, window, overlap, expected):
    assert [(r.start, r.stop) for r in plan_windows(frames, window, overlap)] == expected


@pytest.mark.parametrize(
    "args, match",
    [
        ((1, 8, 2), r"1 frame, these engines need at least 2 \(a single image: pass it twice"),
        ((20, 8, 0), r"overlap must be in \[1, window - 1\]"),
        ((20, 8, 8), r"overlap must be in \[1, window - 1\]"),
        ((20, 7, 2), "window must be a multiple of 2"),
    ],
)
def test_plan_windows_refuses(args, match):
    with pytest.raises(ValueError, match=match):
        plan_windows(*args)


def test_align_sim3_ignores_the_least_confident_15_percent():
    rng = np.random.default_rng(np.random.randint(2**31))
    src = rng.normal(size=(200, 3))
    s, R = rng.uniform(0.5, 2), np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R *= np.sign(np.linalg.det(R))
    dst = s * src @ R.T + rng.normal(size=3)
    conf = rng.uniform(0.5, 1.0, 200)
    bad = rng.choice(200, 25, replace=False)  # 12.5 % outliers, all less confident than any inlier
    dst[bad] += rng.normal(scale=5.0, size=(25, 3))
    conf[bad] = rng.uniform(0.0, 0.4, 25)
    M = align_sim3(src, dst, conf)
    good = np.setdiff1d(np.arange(200), bad)
    np.testing.assert_allclose(src[good] @ M[:3, :3].T + M[:3, 3], dst[good], atol=1e-9)


@pytest.fixture(scope="module")
def room():
    """A fresh random room whose grid tracks stay in view: at least 3 of the 16 tracks from each of frames 0, 10
    and 22 are visible in every frame (the tests check tracks carried across window boundaries; a room where the
    camera loses almost every point would test nothing). Redrawn a few times if needed."""
    rng = np.random.default_rng(np.random.randint(2**31))
    for _ in range(20):
        room = render(23, seed=int(rng.integers(1 << 30)))
        uv = np.repeat(grid_uv(4), 23, 0).astype(np.float64)
        frames = np.tile(np.arange(23), 16)
        if all(room.query(uv, f, frames, 0)["visible"].reshape(16, 23).all(1).sum() >= 3 for f in (0, 10, 22)):
            return room
    raise RuntimeError("no random room kept its grid tracks in view in 20 draws")


def test_oracle_windows_recover_the_ground_truth(room):
    S = 16
    rt = oracle_runtime(room, S, window=8)
    uv = grid_uv(4)
    video = rt.encode_video(room.rgb, overlap=2, pose_size=8, depth_size=8, cloud_size=4, track_uv=uv)
    assert len(video.windows) == 4 and video.scenes is None  # streaming: no window kept
    assert video.num_frames == 23 and (video.owner >= 0).all()
    s0 = rt.backend.windows[0][1]  # the world's scale: window 0's
    gt = ground_truth_poses(room)
    pred = rt.camera_poses(video).copy()
    pred[:, :3, 3] /= s0
    scale = np.abs(gt[:, :3, 3]).max()
    assert np.abs(pred[:, :3, :3] - gt[:, :3, :3]).max() < 1e-5
    assert np.abs(pred[:, :3, 3] - gt[:, :3, 3]).max() < 1e-5 * scale  # exact, up to float32 answers
    # depth at the source pixel grid of every frame, in the world's scale
    g = grid_uv(8).astype(np.float64)
    for f in (0, 7, 13, 22):
        z = room.query(g, f, f, f)["xyz_cam"][:, 2].reshape(8, 8)
        np.testing.assert_allclose(rt.depth(video, f) / s0, z, rtol=1e-5)
    # tracks from frame 0, continued across the window boundaries: the world point at every frame
    q = room.query(np.repeat(uv, 23, 0).astype(np.float64), 0, np.tile(np.arange(23), len(uv)), 0)
    xyz_gt = q["xyz_cam"].reshape(len(uv), 23, 3)
    handovers = [r.stop - 1 for r in video.windows[:-1]]
    held = q["visible"].reshape(len(uv), 23)[:, handovers].all(1)  # a track continues where it is seen
    assert held.sum() >= 3
    err = np.abs(rt.tracks(video, uv, 0)["xyz"][held] / s0 - xyz_gt[held]).max()
    assert err < 1e-3 * np.abs(xyz_gt).max()  # float32 uv handed over between windows


def test_keep_memory_keeps_each_window(room):
    rt = oracle_runtime(room, 16, window=8)
    video = rt.encode_video(room.rgb[:12], overlap=2, pose_size=4, depth_size=4, cloud_size=2, keep_memory=True)
    assert len(video.scenes) == len(video.windows) == 2
    assert rt.query(video.scenes[1], grid_uv(2), 0, 1, 0)["xyz"].shape == (4, 3)


def test_noise_degrades_gracefully(room):
    S = 16
    errors = []
    for noise in (0.0, 0.01):
        rt = oracle_runtime(room, S, window=8, noise=noise, seed=0)
        video = rt.encode_video(room.rgb, overlap=2, pose_size=8, depth_size=4, cloud_size=2)
        pred = rt.camera_poses(video)[:, :3, 3] / rt.backend.windows[0][1]
        errors.append(np.abs(pred - ground_truth_poses(room)[:, :3, 3]).max())
    # 1 % noise along each ray: over 60 random rooms the largest camera-centre error was 0.036 (median), 0.059
    # (95th percentile), 0.077 (max) in the room's units (trajectories span ~2.2); 0.15 is twice the worst draw,
    # so a chain that lost a factor 2 (a window's scale or a handover wrong) fails it
    assert errors[0] < 1e-5 and errors[0] < errors[1] < 0.15


# ----- dense tracking (Alg. 1) -----------------------------------------------------------------------------------
def check_dense_against_truth(room, dense, scale, frames_total):
    n = dense.visited.shape[1]
    assert dense.visited.all()  # every pixel of every frame: a seed or visited by a visible track
    seeds = set(zip(dense.t_src.tolist(), *np.rint(dense.uv * (n - 1)).astype(int).T.tolist()))
    assert len(seeds) == len(dense.t_src)  # no pixel of a frame starts two tracks
    assert (dense.t_src == 0).sum() == n * n and len(dense.t_src) < n * n * frames_total
    assert 0 < dense.queries < dense.queries_all
    L = dense.xyz.shape[1]
    pick = np.random.default_rng(np.random.randint(2**31)).choice(len(dense.t_src), 40, replace=False)
    for p in pick:
        span = np.arange(dense.first_frame[p], min(dense.first_frame[p] + L, frames_total))
        q = room.query(np.repeat(dense.uv[p][None], len(span), 0).astype(np.float64), int(dense.t_src[p]), span, 0)
        np.testing.assert_allclose(dense.xyz[p, : len(span)] / scale, q["xyz_cam"], rtol=1e-4,
                                   atol=1e-4 * np.abs(q["xyz_cam"]).max())
        np.testing.assert_array_equal(dense.visibility[p, : len(span)] > 0.5, q["visible"])


def test_dense_tracks_on_one_clip(room):
    from d4rt.runtime.dense_tracks import dense_tracks

    rt = oracle_runtime(room, 16, window=6)
    scene = rt.encode(room.rgb[:6])
    dense = dense_tracks(rt, scene, size=10)
    check_dense_against_truth(room, dense, rt.backend.windows[0][1], 6)
    summary = dense.summary()
    assert summary["coverage"] == 1.0 and summary["queries_saved"] > 0.3 and summary["tracks"] == len(dense.t_src)

    # dense_tracks.npz stores the per-frame arrays in float16: within float16's rounding of the float32 answer
    # (half a unit in the last place: 2^-11 relative; 2^-25 absolute below float16's smallest normal 2^-14)
    compact = dense.arrays(compact=True)
    for k in ("xyz", "uv_tgt", "visibility", "confidence"):
        full, half = getattr(dense, k).astype(np.float64), compact[k].astype(np.float64)
        assert compact[k].dtype == np.float16 and np.array_equal(np.isnan(full), np.isnan(half))
        ok = ~np.isnan(full)
        assert (np.abs(half[ok] - full[ok]) <= 2.0**-11 * np.abs(full[ok]) + 2.0**-25).all(), k
    assert sum(a.nbytes for a in compact.values()) < 0.55 * sum(a.nbytes for a in dense.arrays().values())
    big = dense.arrays()
    dense.xyz[0, 0, 0] = 7e4  # beyond float16's range: xyz stays float32
    assert dense.arrays(compact=True)["xyz"].dtype == np.float32 and big["xyz"].dtype == np.float32


def test_dense_tracks_across_windows(room):
    rt = oracle_runtime(room, 16, window=8)
    video = rt.encode_video(room.rgb[:14], overlap=2, pose_size=6, depth_size=4, cloud_size=2, dense_size=8)
    assert len(video.windows) == 2
    check_dense_against_truth(room, video.dense, rt.backend.windows[0][1], 14)
    # the shared frames were visited by window 0's tracks: window 1 starts tracks only in the frames it owns
    assert set(np.unique(video.dense.t_src[video.dense.first_frame == 6])) <= set(range(8, 14))


def test_refit_drops_confident_outliers():
    """19 % of the pairs hold an outlier as confident as the inliers (10 % per window): the top 85 % keeps some;
    the refits without residuals above 5x the median recover the transform, the paper's rule alone does not."""
    rng = np.random.default_rng(np.random.randint(2**31))
    src = rng.normal(size=(400, 3))
    s, R = rng.uniform(0.5, 2), np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R *= np.sign(np.linalg.det(R))
    dst = s * src @ R.T + rng.normal(size=3)
    bad = rng.choice(400, 76, replace=False)
    away = rng.normal(size=(76, 3))  # outliers: 2-8 units off in a random direction (a tiny offset is no outlier)
    dst[bad] += away / np.linalg.norm(away, axis=1, keepdims=True) * rng.uniform(2.0, 8.0, (76, 1))
    conf = np.ones(400)
    good = np.setdiff1d(np.arange(400), bad)
    M = align_sim3(src, dst, conf)
    np.testing.assert_allclose(src[good] @ M[:3, :3].T + M[:3, 3], dst[good], atol=1e-9)
    plain = align_sim3(src, dst, conf, trim=None)
    assert np.abs(src[good] @ plain[:3, :3].T + plain[:3, 3] - dst[good]).max() > 1e-2


def test_video_tracks_from_any_frame_forward_and_backward(room):
    from d4rt.runtime.windows import video_tracks

    rt = oracle_runtime(room, 16, window=8)
    video = rt.encode_video(room.rgb, overlap=2, pose_size=8, depth_size=2, cloud_size=2, keep_memory=True)
    with pytest.raises(ValueError, match="keep_memory=True"):
        video_tracks(rt, rt.encode_video(room.rgb[:8], pose_size=4, depth_size=2, cloud_size=2), grid_uv(2), 0)
    uv = np.tile(grid_uv(4), (3, 1))
    t_src = np.repeat([0, 10, 22], 16)  # seeded in the first, a middle and the last window
    s0 = rt.backend.windows[0][1]
    for own in (True, False):
        tracks = video_tracks(rt, video, uv, t_src, own_camera=own)
        assert np.isfinite(tracks["xyz"]).all()  # every frame of every track answered
        q = room.query(np.repeat(uv, 23, 0).astype(np.float64), np.repeat(t_src, 23), np.tile(np.arange(23), 48),
                       np.tile(np.arange(23), 48) if own else 0)
        gt = q["xyz_cam"].reshape(48, 23, 3)
        handovers = sorted({r.stop - 1 for r in video.windows[:-1]} | {r.start for r in video.windows[1:]})
        held = q["visible"].reshape(48, 23)[:, handovers].all(1)
        assert held.sum() >= 5
        err = np.abs(tracks["xyz"][held] / s0 - gt[held]).max()
        assert err < 1e-3 * np.abs(gt).max()
