"""The runtime's geometry on known geometry, without torch or a network.

An analytic backend answers queries exactly: cameras with known poses and a known pinhole K look at the inside of
a sphere (every ray hits it once). rt.camera_poses, rt.intrinsics, rt.depth and rt.tracks, which only see query
answers, must recover the poses (to 1e-5), the focal lengths and the depths.
"""

import numpy as np
import pytest

from d4rt.runtime.runtime import Runtime
from tests.test_geometry import random_rotation


class SphereScene:
    """A static sphere (centre 0, radius r) seen by T pinhole cameras T_wc [T, 4, 4] with intrinsics K."""

    name = "analytic-sphere"
    max_queries = None

    def __init__(self, T_wc: np.ndarray, K: np.ndarray, image_size: int, radius: float = 10.0):
        self.T_wc, self.K, self.S, self.radius = T_wc, K, image_size, radius
        self.batches = []

    def encode(self, video, aspect_ratio):
        return "state"

    def world_points(self, uv: np.ndarray, t_src: np.ndarray) -> np.ndarray:
        """The sphere point seen at uv in camera t_src. uv [N, 2], t_src [N] -> [N, 3] (world)."""
        pix = uv * (self.S - 1)
        K = self.K
        ray_cam = np.stack([(pix[:, 0] - K[0, 2]) / K[0, 0], (pix[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))], -1)
        R, c = self.T_wc[t_src, :3, :3], self.T_wc[t_src, :3, 3]
        d = np.einsum("nij,nj->ni", R, ray_cam)
        # |c + s d|^2 = r^2, the positive root (the camera is inside the sphere)
        a, b, cc = (d * d).sum(1), 2 * (c * d).sum(1), (c * c).sum(1) - self.radius**2
        s = (-b + np.sqrt(b * b - 4 * a * cc)) / (2 * a)
        return c + s[:, None] * d

    def decode(self, state, uv, t):
        self.batches.append(uv.shape[1])
        uv, t = uv[0].astype(np.float64), t[0]
        P_w = self.world_points(uv, t[:, 0])  # static scene: the same point at every t_tgt
        T_cw = np.linalg.inv(self.T_wc[t[:, 2]])
        xyz = np.einsum("nij,nj->ni", T_cw[:, :3, :3], P_w) + T_cw[:, :3, 3]
        n = len(uv)
        return {"xyz": xyz[None].astype(np.float32), "uv_tgt": uv[None].astype(np.float32),
                "visibility": np.full((1, n), 6.0, np.float32), "displacement": np.zeros((1, n, 3), np.float32),
                "normal": np.zeros((1, n, 3), np.float32), "confidence": np.full((1, n), 4.0, np.float32)}


def make_scene(T=5, S=64):
    rng = np.random.default_rng(np.random.randint(2**31))
    T_wc = np.tile(np.eye(4), (T, 1, 1))
    for j in range(1, T):  # small motions: the cameras stay well inside the sphere
        T_wc[j, :3, :3] = random_rotation(rng) if j == T - 1 else _small_rotation(rng, 0.3)
        T_wc[j, :3, 3] = rng.uniform(-1.0, 1.0, 3)
    f = rng.uniform(0.8, 1.6) * S
    c = (S - 1) / 2
    K = np.array([[f * rng.uniform(0.9, 1.1), 0, c], [0, f, c], [0, 0, 1.0]])
    backend = SphereScene(T_wc, K, S)
    rt = Runtime(backend, num_frames=T, image_size=S, frame_step=1)  # an analytic backend: any frame count
    scene = rt.encode(rng.integers(0, 256, (T, 48, 80, 3), dtype=np.uint8))
    return rt, scene, backend


def _small_rotation(rng, max_angle):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle, max_angle)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def test_camera_poses_are_recovered():
    rt, scene, backend = make_scene()
    poses = rt.camera_poses(scene, size=32, batch_size=1000)
    expected = np.linalg.inv(backend.T_wc[0]) @ backend.T_wc  # frame 0 is the world
    assert poses.shape == (5, 4, 4)
    np.testing.assert_array_equal(poses[0], np.eye(4))
    assert np.abs(poses - expected).max() < 1e-5
    assert max(backend.batches) <= 1000  # the grid queries went through the batching


def test_intrinsics_are_recovered():
    rt, scene, backend = make_scene()
    K = rt.intrinsics(scene, size=16)
    assert K.shape == (5, 3, 3)
    np.testing.assert_allclose(K, np.broadcast_to(backend.K, K.shape), rtol=1e-5, atol=1e-9)


def test_depth_and_tracks_follow_the_geometry():
    rt, scene, backend = make_scene(S=32)
    depth, conf = rt.depth(scene, 2, with_confidence=True)
    assert depth.shape == (32, 32) and np.allclose(conf, 1 / (1 + np.exp(-4.0)))
    from d4rt.runtime.geometry import grid_uv

    uv = grid_uv(32).astype(np.float64)
    P_w = backend.world_points(uv, np.full(len(uv), 2))
    T_cw = np.linalg.inv(backend.T_wc[2])
    z = (P_w @ T_cw[:3, :3].T + T_cw[:3, 3])[:, 2].reshape(32, 32)
    np.testing.assert_allclose(depth, z, rtol=1e-6)
    assert np.array_equal(rt.depth(scene, [2])[0], depth)

    tracks = rt.tracks(scene, uv[:7], t_src=1)  # static scene, world frame: constant tracks
    assert tracks["xyz"].shape == (7, 5, 3) and tracks["visibility"].shape == (7, 5)
    np.testing.assert_allclose(tracks["xyz"], np.repeat(tracks["xyz"][:, :1], 5, 1), atol=1e-5)
    own = rt.tracks(scene, uv[:7], t_src=1, t_cam=None)  # each time in its own camera: moves with the camera
    assert np.abs(own["xyz"][:, 1:] - own["xyz"][:, :1]).max() > 1e-2


def test_point_cloud_colours_and_frames():
    rt, scene, _ = make_scene(S=32)
    cloud = rt.point_cloud(scene, t_cam=0, size=32, frames=[0, 3])
    assert cloud["xyz"].shape == (2 * 32 * 32, 3) and cloud["rgb"].dtype == np.uint8
    assert set(np.unique(cloud["frame"])) == {0, 3}
    # on the S x S grid each point's colour is exactly its pixel in the resized frame
    np.testing.assert_array_equal(cloud["rgb"][: 32 * 32].reshape(32, 32, 3), scene.frames[0])
    np.testing.assert_array_equal(cloud["rgb"][32 * 32:].reshape(32, 32, 3), scene.frames[3])
    assert len(rt.point_cloud(scene, size=8, min_confidence=0.99)["xyz"]) == 0  # sigmoid(4) = 0.982 < 0.99


def test_geometry_refuses_bad_frames():
    rt, scene, _ = make_scene()
    with pytest.raises(ValueError, match=r"expected \[0, 5\)"):
        rt.depth(scene, 5)
    with pytest.raises(ValueError, match="t_cam must be an integer"):
        rt.point_cloud(scene, t_cam=1.5)
