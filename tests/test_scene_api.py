"""One way to do each thing (issue #24): one pose estimator, one scene API, one validation, old spellings warn.

References are independent of the code under test: the known ground-truth poses of a rigid synthetic scene and of a
rendered room (d4rt.data.oracle_video answers queries exactly), and a Scene's own queries for what a VideoScene of
one window must answer.
"""

import warnings

import numpy as np
import pytest

from d4rt.runtime.geometry import grid_uv, poses_from_grid_points, rigid, transform_points, umeyama
from d4rt.runtime.inputs import check_batch_size, check_times, check_uv
from d4rt.data.oracle_video import OracleVideo, ground_truth_poses, oracle_runtime, render
from tests.test_geometry import random_rotation


# ----- one pose estimator ------------------------------------------------------------------------------------------
def test_pose_estimator_recovers_the_pose_through_10_percent_outliers():
    """A rigid scene seen from T cameras with known poses; 10 % of each frame's points are outliers 2-8 units off,
    exactly as confident as the inliers (confidence cannot single them out). The house's estimator recovers every
    pose; the plain Umeyama fit (the runtime's camera_poses before) does not."""
    rng = np.random.default_rng(np.random.randint(2**31))
    T, G = 6, 256
    T_wc = np.stack([np.eye(4)] + [rigid(random_rotation(rng), rng.uniform(-2, 2, 3)) for _ in range(T - 1)])
    xyz_first = rng.uniform(-3, 3, (T - 1, G, 3)) + [0, 0, 6]  # the points in camera 0 (the world)
    xyz_own = transform_points(np.linalg.inv(T_wc[1:])[:, None], xyz_first)  # the same points in camera j
    xyz_own += rng.normal(scale=1e-4, size=xyz_own.shape)  # float32-sized answer noise
    for j in range(T - 1):
        bad = rng.choice(G, G // 10, replace=False)
        away = rng.normal(size=(len(bad), 3))
        xyz_own[j, bad] += away / np.linalg.norm(away, axis=1, keepdims=True) * rng.uniform(2, 8, (len(bad), 1))
    confidence = rng.uniform(0.9, 1.0, (T - 1, G))  # uninformative: outliers drawn from the inliers' distribution
    poses = poses_from_grid_points(xyz_own, xyz_first, confidence)
    # noise 1e-4 on 230 inliers spread over ~3 units: the fit's error is ~1e-4 / sqrt(230) x lever arm, far below 1e-3
    assert np.abs(poses[:, :3, 3] - T_wc[:, :3, 3]).max() < 1e-3
    assert np.abs(poses[:, :3, :3] - T_wc[:, :3, :3]).max() < 1e-3
    plain = [umeyama(xyz_own[j], xyz_first[j], with_scale=False) for j in range(T - 1)]
    assert max(np.abs(t - T_wc[j + 1, :3, 3]).max() for j, (_, _, t) in enumerate(plain)) > 0.05


class FixedOutliers(OracleVideo):
    """The oracle's exact answers with 10 % outliers chosen by the query itself (uv, t), so the same query gets the
    same answer through every path; as confident as the inliers."""

    def decode(self, state, uv, t):
        out = super().decode(state, uv, t)
        key = uv[0, :, 0] * 12.9898 + uv[0, :, 1] * 78.233 + t[0] @ np.array([3.17, 5.71, 7.33])
        h = np.sin(key) * 43758.5453
        frac = h - np.floor(h)
        bad = frac < 0.1
        angle = frac[bad] * 62.8
        offset = np.stack([np.cos(angle), np.sin(angle), np.cos(3 * angle)], -1) * (2.0 + 40 * frac[bad, None])
        out["xyz"][0, bad] += (offset * state[1]).astype(np.float32)
        return out


def test_runtime_poses_equal_the_video_poses_and_the_truth():
    """What `d4rt evaluate` and the server score (Runtime.camera_poses) is what `d4rt infer` writes (a VideoScene's
    poses): equal on a clip that fits one window, and both the ground truth despite 10 % confident outliers."""
    room = render(8, seed=int(np.random.default_rng(np.random.randint(2**31)).integers(1 << 30)))
    S, n = 16, 8

    def runtime():  # the same seed: the same random scale for the one window each encodes
        from d4rt.runtime.runtime import Runtime

        return Runtime(FixedOutliers(room, S, seed=7), 8, S, min_frames=2, frame_step=2)

    rt_scene, rt_video = runtime(), runtime()
    poses = rt_scene.camera_poses(rt_scene.encode(room.rgb), size=n)
    video = rt_video.encode_video(room.rgb, pose_size=n, depth_size=2, cloud_size=2)
    assert len(video.windows) == 1
    np.testing.assert_allclose(rt_video.camera_poses(video), poses, atol=1e-9)
    scale = rt_scene.backend.windows[0][1]
    assert scale == rt_video.backend.windows[0][1]
    gt = ground_truth_poses(room)
    assert np.abs(poses[:, :3, :3] - gt[:, :3, :3]).max() < 1e-4
    assert np.abs(poses[:, :3, 3] / scale - gt[:, :3, 3]).max() < 1e-4 * max(1.0, np.abs(gt[:, :3, 3]).max())


class BehindTheCameraAt(OracleVideo):
    """The oracle, except that every point asked in the camera of frame ``t_cam`` is mirrored through that camera
    (x, y, z -> -x, -y, -z): all behind it, as an untrained model may put a whole frame."""

    def __init__(self, clip, image_size, t_cam, **options):
        super().__init__(clip, image_size, **options)
        self.t_cam = t_cam

    def decode(self, state, uv, t):
        out = super().decode(state, uv, t)
        out["xyz"][0, t[0, :, 2] == self.t_cam] *= -1
        return out


def test_a_frame_behind_the_camera_is_encoded_and_its_intrinsics_refused():
    """A frame with no point in front of the camera has no focal length: the video still encodes and poses (what
    `d4rt evaluate` asks), and rt.intrinsics names the frame and the likely cause instead of a number."""
    from d4rt.runtime.runtime import Runtime

    room = render(8, seed=int(np.random.randint(1 << 30)))
    rt = Runtime(BehindTheCameraAt(room, 16, t_cam=5, seed=3), 8, 16, min_frames=2, frame_step=2)
    video = rt.encode_video(room.rgb, start=2, pose_size=6, depth_size=2, cloud_size=2)  # one window: frames 2..7
    assert np.isfinite(rt.camera_poses(video)).all() and np.isnan(video.K[5]).all()  # the window's 5: source 7
    assert np.isfinite(np.delete(video.K, 5, axis=0)).all()
    with pytest.raises(ValueError, match=r"no focal length for 1 frame\(s\) \(7\).*untrained or random-weight"):
        rt.intrinsics(video)
    scene = rt.encode(room.rgb)
    with pytest.raises(ValueError, match=r"no point in front of the camera.*untrained or random-weight"):
        rt.intrinsics(scene, size=6)


# ----- one scene API -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_window():
    """A clean oracle: a Scene and a VideoScene (kept windows) of the same 8 frames at the same scale."""
    room = render(8, seed=int(np.random.default_rng(np.random.randint(2**31)).integers(1 << 30)))
    S = 16
    rt_a, rt_b = (oracle_runtime(room, S, window=8, seed=3) for _ in range(2))
    scene = rt_a.encode(room.rgb)
    uv = grid_uv(3)
    video = rt_b.encode_video(room.rgb, pose_size=6, depth_size=5, cloud_size=4, track_uv=uv, keep_memory=True)
    return rt_a, scene, rt_b, video, uv


def test_a_video_is_answered_like_a_scene(one_window):
    rt, scene, rt_v, video, uv = one_window
    np.testing.assert_allclose(rt_v.depth(video, [1, 6]), rt.depth(scene, [1, 6], size=5), rtol=1e-6)
    assert rt_v.depth(video, 3).shape == (5, 5) and rt_v.depth(video).shape == (8, 5, 5)
    np.testing.assert_allclose(rt_v.intrinsics(video), rt.intrinsics(scene, size=6), rtol=1e-6)
    np.testing.assert_allclose(rt_v.camera_poses(video), rt.camera_poses(scene, size=6), atol=1e-6)
    # the cloud in camera 2: the video moves its world points by its poses, the scene queries camera 2 directly
    a, b = rt_v.point_cloud(video, t_cam=2, frames=[0, 5]), rt.point_cloud(scene, t_cam=2, size=4, frames=[0, 5])
    np.testing.assert_array_equal(a["frame"], b["frame"])
    np.testing.assert_allclose(a["xyz"], b["xyz"], atol=1e-4 * np.abs(b["xyz"]).max())
    # tracks: the ones encode_video took, and (windows kept) any pixel from any frame, in any camera
    np.testing.assert_allclose(rt_v.tracks(video, uv, 0)["xyz"], rt.tracks(scene, uv, 0)["xyz"], rtol=1e-5, atol=1e-5)
    a, b = rt_v.tracks(video, uv[:4], 5, t_cam=None), rt.tracks(scene, uv[:4], 5, t_cam=None)
    np.testing.assert_allclose(a["xyz"], b["xyz"], rtol=1e-5, atol=1e-5)


def test_a_video_refuses_what_it_did_not_take(one_window):
    _, _, rt_v, video, _ = one_window
    with pytest.raises(ValueError, match=r"taken on a 5 x 5 grid, not 7 x 7.*encode_video\(depth_size=7\)"):
        rt_v.depth(video, 0, size=7)
    with pytest.raises(ValueError, match=r"t has frame indices in \[8, 8\], expected \[0, 8\)"):
        rt_v.depth(video, 8)
    with pytest.raises(ValueError, match="a VideoScene answers depth"):
        rt_v.query(video, grid_uv(2), 0, 0, 0)
    streamed = rt_v.encode_video(video.frames, pose_size=2, depth_size=2, cloud_size=2)
    with pytest.raises(ValueError, match="keep_memory=True to track any pixel"):
        rt_v.tracks(streamed, grid_uv(2), 0)


def test_old_spellings_warn_and_answer_the_same(one_window):
    rt, scene, rt_v, video, uv = one_window
    with pytest.warns(DeprecationWarning, match="grid= is deprecated.*use size="):
        old = rt.camera_poses(scene, grid=6)
    np.testing.assert_array_equal(old, rt.camera_poses(scene, size=6))
    with pytest.warns(DeprecationWarning, match=r"video.depth\(t\) is deprecated.*rt.depth\(video, t\)"):
        np.testing.assert_array_equal(video.depth(3), rt_v.depth(video, 3))
    for old_call, new in ((video.camera_poses, rt_v.camera_poses(video)), (video.intrinsics, rt_v.intrinsics(video))):
        with pytest.warns(DeprecationWarning):
            np.testing.assert_array_equal(old_call(), new)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(video.tracks()["xyz"], rt_v.tracks(video, uv, 0)["xyz"])
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(video.point_cloud(0.5)["xyz"], rt_v.point_cloud(video, min_confidence=0.5)["xyz"])
    with pytest.warns(DeprecationWarning, match="pose_grid= is deprecated"):
        again = rt_v.encode_video(video.frames, pose_grid=6, depth_size=2, cloud_size=2)
    a, b = rt_v.camera_poses(again), rt_v.camera_poses(video)  # another encode: another random scale
    scales = [w[1] for w in rt_v.backend.windows]
    np.testing.assert_allclose(a[:, :3, :3], b[:, :3, :3], atol=1e-6)
    np.testing.assert_allclose(a[:, :3, 3] / scales[-1], b[:, :3, 3] / scales[0], atol=1e-5)
    with pytest.raises(ValueError, match="disagree"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rt.camera_poses(scene, size=4, grid=6)


def test_old_names_of_moved_things_warn():
    from d4rt.data.synthetic import Room
    from d4rt.runtime import infer

    clip = Room.random(5, num_frames=2).render_clip(8, 8)
    with pytest.warns(DeprecationWarning, match="RenderedClip.room"):
        assert clip.scene is clip.room
    with pytest.warns(DeprecationWarning, match="use infer_video"), pytest.raises(TypeError):
        infer.infer_clip()  # forwards its arguments: none given is infer_video's own TypeError
    from d4rt.evaluation.evaluate import EvalOptions

    with pytest.warns(DeprecationWarning, match="pose_grid= is deprecated.*use pose_size="):
        assert EvalOptions(pose_grid=4) == EvalOptions(pose_size=4)
    with pytest.raises(ValueError, match="disagree"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        EvalOptions(pose_size=8, pose_grid=4)


# ----- one validation ----------------------------------------------------------------------------------------------
def test_one_validation_for_every_front_end():
    from d4rt.serve.server import check_query_values

    uv = np.random.default_rng(np.random.randint(2**31)).random((6, 2)).astype(np.float32)
    uv[2, 0] = np.nan
    with pytest.raises(ValueError) as runtime_error:
        check_uv(uv)
    assert str(runtime_error.value) == "uv contains 1 NaN or infinite values"
    t = np.zeros((6, 3), np.int32)
    assert check_query_values(uv, t, 4, 100) == str(runtime_error.value)  # the server says the same
    with pytest.raises(ValueError, match=r"t_cam has frame indices in \[4, 4\], expected \[0, 4\)"):
        check_times("t_cam", 4, 6, 4)
    assert check_query_values(np.nan_to_num(uv), t + [0, 0, 4], 4, 100) == (
        "t_cam has frame indices in [4, 4], expected [0, 4) for this clip")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            check_batch_size(bad)
