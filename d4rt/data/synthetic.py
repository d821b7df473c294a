"""Synthetic dynamic 4D scenes with exact answers to every D4RT query. Numpy only (no torch).

A scene is a closed, textured room (floor, four walls, ceiling) holding 2 to 6 textured spheres and boxes that
move and rotate, filmed by a camera on a smooth path. Frames are ray cast, all pixels of a frame at once (no
per-pixel Python loops), in float64.

Conventions (design.md): world z is up; cameras use OpenCV axes (+x right, +y down, +z forward); ``T_wc`` is
camera-to-world; ``T_wo`` is object-to-world (instance 0 is the static room, identity); normalised image
coordinates are u = x / (W - 1), v = y / (H - 1) with pixel centres at integer x, y. Time runs over frame indices
t in [0, T); motion is parameterised by tau = t / (T - 1), so a 16-frame and a 48-frame clip of one scene cover
the same motion.

Exact query answers (:meth:`Room.query`): cast the ray of (u, v) in frame t_src, take the surface point hit,
carry it rigidly with its object (or keep it fixed if it is on the room) to t_tgt, express it in t_cam's camera.
Its visibility at t_tgt: in front of camera t_tgt, inside the image, and not occluded: the depth of frame t_tgt
evaluated at the point's exact projection (a ray cast there, which equals the depth map at pixel centres) is not
nearer than the point. Clips on disk keep the scene's parameters, so these answers stay exact after reading.

    >>> scene = Room.random(seed=3, num_frames=16)
    >>> clip = scene.render_clip(128, 128)                 # rgb, depth, normal, instance, K, T_wc, T_wo
    >>> write_clip("clip.npz", clip); clip = read_clip("clip.npz")
    >>> ans = clip.query(uv, t_src, t_tgt, t_cam)          # xyz_cam, uv_tgt, visible, displacement, normal, ...
"""

from __future__ import annotations

import dataclasses
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.runtime.files import atomic_path
from d4rt.runtime.geometry import invert_rigid, rigid, transform_points  # noqa: F401 (re-exported)

CLIP_FORMAT_VERSION = 1
BACKGROUND = 0  # instance id of the room
VISIBILITY_RTOL = 1e-6  # depth test tolerance (relative): the ray cast is exact up to float64 round-off
_EPS = 1e-9


# ----------------------------------------------------------------------------------------------------------------
# small geometry helpers
# ----------------------------------------------------------------------------------------------------------------
def rotation_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle [..., 3] -> rotation [..., 3, 3]."""
    rotvec = np.asarray(rotvec, np.float64)
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    axis = rotvec / np.maximum(angle, _EPS)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    Kx = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis.shape[:-1], 3, 3)
    a = angle[..., None]
    return np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * (Kx @ Kx)


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world [..., 4, 4] of a camera at ``eye`` looking at ``target``, OpenCV axes, no roll."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, np.broadcast_to(np.asarray(up, np.float64), forward.shape))
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    return rigid(np.stack([right, down, forward], -1), eye)


def _rotate(R: np.ndarray, v: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Row-wise R v (or R^T v) for rotations R [1 | P, 3, 3] and vectors v [P, 3] (or [1, 3])."""
    return (v[:, None, :] @ (R if inverse else np.swapaxes(R, -1, -2)))[:, 0]


# Seeds of the synthetic splits: training 0+, validation 1,000,000+, held-out test 2,000,000+ (never trained on).
TRAIN_SEED_BASE, VAL_SEED_BASE, TEST_SEED_BASE = 0, 1_000_000, 2_000_000


def pixel_grid(height: int, width: int) -> np.ndarray:
    """Pixel centres [H * W, 2] (x, y), row-major."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x.ravel(), y.ravel()], -1).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# scene description (plain data, JSON round trip)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Texture:
    """A procedural 3-D texture evaluated at points in the surface's own frame (so it moves with the object):
    a checker of cell ``scale`` mixing two colours, sinusoidal stripes, and a per-cell brightness jitter."""

    colour_a: list[float]
    colour_b: list[float]
    scale: float
    offset: list[float]  # shifts the checker so no cell boundary lies exactly on a face
    stripe_freq: list[float]  # wave vector of the stripes, radians per metre
    stripe_phase: float

    @classmethod
    def random(cls, rng: np.random.Generator, scale_range=(0.15, 0.6)) -> "Texture":
        a = rng.uniform(0.1, 0.95, 3)
        b = np.clip(a * rng.uniform(0.2, 0.6) + rng.uniform(0.0, 0.4, 3), 0.0, 1.0)
        scale = rng.uniform(*scale_range)
        return cls(
            colour_a=a.tolist(),
            colour_b=b.tolist(),
            scale=float(scale),
            offset=rng.uniform(0.0, scale, 3).tolist(),
            stripe_freq=(rng.normal(0.0, 1.0, 3) * rng.uniform(4.0, 14.0)).tolist(),
            stripe_phase=float(rng.uniform(0, 2 * np.pi)),
        )

    def colour(self, p: np.ndarray) -> np.ndarray:
        """Albedo [P, 3] in [0, 1] at points p [P, 3] (the texture's frame)."""
        cell = np.floor((p + self.offset) / self.scale)
        checker = (cell.sum(-1) % 2)[:, None]
        base = np.where(checker > 0, self.colour_a, self.colour_b)
        stripes = 0.5 + 0.5 * np.sin(p @ np.asarray(self.stripe_freq) + self.stripe_phase)
        jitter = np.modf(np.abs(np.sin(cell @ np.array([12.9898, 78.233, 37.719])) * 43758.5453))[0]
        return np.clip(base * (0.72 + 0.2 * stripes[:, None] + 0.16 * jitter[:, None]), 0.0, 1.0)


@dataclass
class MovingObject:
    """A sphere (``size`` = [radius]) or box (``size`` = half extents [hx, hy, hz]) moving as
    centre(tau) = centre + velocity * tau + amplitude * sin(2 pi freq * tau + phase) and rotating as
    R(tau) = exp(spin * tau) @ exp(rotvec0)."""

    kind: str
    size: list[float]
    texture: Texture
    centre: list[float]
    velocity: list[float]
    amplitude: list[float]
    freq: list[float]
    phase: list[float]
    rotvec0: list[float]
    spin: list[float]

    @property
    def bounding_radius(self) -> float:
        return float(self.size[0]) if self.kind == "sphere" else float(np.linalg.norm(self.size))

    def pose(self, tau: np.ndarray) -> np.ndarray:
        """Object-to-world [len(tau), 4, 4]."""
        tau = np.asarray(tau, np.float64)[:, None]
        centre = (
            np.asarray(self.centre)
            + np.asarray(self.velocity) * tau
            + np.asarray(self.amplitude) * np.sin(2 * np.pi * np.asarray(self.freq) * tau + np.asarray(self.phase))
        )
        R = rotation_from_rotvec(np.asarray(self.spin) * tau) @ rotation_from_rotvec(np.asarray(self.rotvec0))
        return rigid(R, centre)


@dataclass
class CameraPath:
    """The camera orbits the room's centre: azimuth, radius and height follow smooth curves of tau; it looks at a
    target that drifts slowly around the objects."""

    azimuth0: float
    sweep: float  # radians over the clip
    radius: float
    radius_wobble: float
    height: float
    height_wobble: float
    target: list[float]
    target_wobble: list[float]
    wobble_freq: list[float]  # [radius, height, target]
    wobble_phase: list[float]

    def poses(self, tau: np.ndarray) -> np.ndarray:
        """Camera-to-world [len(tau), 4, 4]."""
        tau = np.asarray(tau, np.float64)
        f, ph = np.asarray(self.wobble_freq), np.asarray(self.wobble_phase)
        azimuth = self.azimuth0 + self.sweep * (3 * tau**2 - 2 * tau**3)  # smooth start and stop
        radius = self.radius + self.radius_wobble * np.sin(2 * np.pi * f[0] * tau + ph[0])
        height = self.height + self.height_wobble * np.sin(2 * np.pi * f[1] * tau + ph[1])
        eye = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), height], -1)
        drift = np.sin(2 * np.pi * f[2] * tau + ph[2])[:, None] * np.asarray(self.target_wobble)
        return look_at(eye, np.asarray(self.target) + drift)


@dataclass
class Room:
    """A room [-hx, hx] x [-hy, hy] x [0, height] with moving objects and a camera path, over ``num_frames``.

    The field of view is fixed by ``fov_x_deg`` and the original frame's ``aspect`` (W / H), so any render size
    shows the same view: an S x S render is the original W x H frame resized to S x S (design.md), with
    non-square pixels.
    """

    num_frames: int
    room_half: list[float]  # [hx, hy]
    room_height: float
    floor_texture: Texture
    wall_texture: Texture
    ceiling_texture: Texture
    objects: list[MovingObject]
    camera: CameraPath
    fov_x_deg: float
    aspect: float
    light_dir: list[float]
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ----- construction ---------------------------------------------------------------------------------------
    @classmethod
    def random(
        cls,
        seed: int,
        num_frames: int = 48,
        aspect: float | None = None,
        num_objects: tuple[int, int] = (2, 6),
    ) -> "Room":
        """A random scene, deterministic from ``seed``. ``aspect`` (W / H of the original video) is drawn from
        {4/3, 16/9, 1, 3/4} when None."""
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (a clip with motion), got {num_frames}")
        lo, hi = num_objects
        if not 1 <= lo <= hi:
            raise ValueError(f"num_objects must be (min, max) with 1 <= min <= max, got {num_objects}")
        rng = np.random.default_rng(seed)
        hx, hy = rng.uniform(4.5, 7.0, 2)
        room_height = rng.uniform(3.2, 4.5)
        if aspect is None:
            aspect = float(rng.choice([4 / 3, 16 / 9, 1.0, 3 / 4]))

        radius = rng.uniform(3.3, min(hx, hy) - 0.8)
        radius_wobble = rng.uniform(0.0, 0.3)
        camera = CameraPath(
            azimuth0=float(rng.uniform(0, 2 * np.pi)),
            sweep=float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.2)),
            radius=float(radius),
            radius_wobble=float(radius_wobble),
            height=float(rng.uniform(1.0, 2.2)),
            height_wobble=float(rng.uniform(0.0, 0.3)),
            target=[*rng.uniform(-0.6, 0.6, 2).tolist(), float(rng.uniform(0.3, 1.0))],
            target_wobble=rng.uniform(0.0, 0.4, 3).tolist(),
            wobble_freq=rng.uniform(0.3, 1.0, 3).tolist(),
            wobble_phase=rng.uniform(0, 2 * np.pi, 3).tolist(),
        )
        # objects keep 0.4 m clear of the camera's closest approach, and above the floor
        reach = radius - radius_wobble - 0.4
        objects = []
        for _ in range(int(rng.integers(lo, hi + 1))):
            kind = "sphere" if rng.random() < 0.5 else "box"
            size = [float(rng.uniform(0.25, 0.7))] if kind == "sphere" else rng.uniform(0.2, 0.5, 3).tolist()
            r = float(size[0]) if kind == "sphere" else float(np.linalg.norm(size))
            horizontal = reach - r
            amp = rng.uniform(0.1, 0.6, 3) * [1.0, 1.0, 0.4]
            vel = rng.normal(0.0, 0.3, 3) * [1.0, 1.0, 0.0]
            start_r = max(horizontal - amp[:2].max() - np.abs(vel[:2]).max(), 0.0) * np.sqrt(rng.uniform(0, 1))
            angle = rng.uniform(0, 2 * np.pi)
            z = r + amp[2] + rng.uniform(0.0, 0.8)
            objects.append(
                MovingObject(
                    kind=kind,
                    size=size,
                    texture=Texture.random(rng, scale_range=(0.08, 0.3)),
                    centre=[float(start_r * np.cos(angle)), float(start_r * np.sin(angle)), float(z)],
                    velocity=vel.tolist(),
                    amplitude=amp.tolist(),
                    freq=rng.uniform(0.2, 0.8, 3).tolist(),
                    phase=rng.uniform(0, 2 * np.pi, 3).tolist(),
                    rotvec0=rng.normal(0.0, 1.5, 3).tolist(),
                    spin=(rng.normal(0.0, 1.0, 3) * rng.uniform(0.3, 2.0)).tolist(),
                )
            )
        light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
        return cls(
            num_frames=int(num_frames),
            room_half=[float(hx), float(hy)],
            room_height=float(room_height),
            floor_texture=Texture.random(rng),
            wall_texture=Texture.random(rng),
            ceiling_texture=Texture.random(rng),
            objects=objects,
            camera=camera,
            fov_x_deg=float(rng.uniform(50.0, 75.0)),
            aspect=float(aspect),
            light_dir=(light / np.linalg.norm(light)).tolist(),
            seed=int(seed),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Room":
        d = dict(d)
        for key in ("floor_texture", "wall_texture", "ceiling_texture"):
            d[key] = Texture(**d[key])
        d["objects"] = [MovingObject(**{**o, "texture": Texture(**o["texture"])}) for o in d["objects"]]
        d["camera"] = CameraPath(**d["camera"])
        return cls(**d)

    # ----- cameras and motion ---------------------------------------------------------------------------------
    @property
    def num_instances(self) -> int:
        """Instances including the room (id 0)."""
        return len(self.objects) + 1

    def tau(self, t: np.ndarray | None = None) -> np.ndarray:
        t = np.arange(self.num_frames) if t is None else np.asarray(t)
        return t / (self.num_frames - 1)

    def intrinsics(self, height: int, width: int) -> np.ndarray:
        """K [3, 3] of a height x width render of this scene's view (pixel centres at integers)."""
        half_x = np.tan(np.radians(self.fov_x_deg) / 2)
        half_y = half_x / self.aspect
        cx, cy = (width - 1) / 2, (height - 1) / 2
        return np.array([[cx / half_x, 0.0, cx], [0.0, cy / half_y, cy], [0.0, 0.0, 1.0]])

    def camera_poses(self) -> np.ndarray:
        """T_wc [T, 4, 4]."""
        return self.camera.poses(self.tau())

    def object_poses(self) -> np.ndarray:
        """T_wo [T, num_instances, 4, 4]; instance 0 (the room) is the identity."""
        poses = [np.broadcast_to(np.eye(4), (self.num_frames, 4, 4))]
        poses += [obj.pose(self.tau()) for obj in self.objects]
        return np.stack(poses, 1).copy()

    # ----- ray casting ----------------------------------------------------------------------------------------
    def cast(self, t, xy: np.ndarray, K: np.ndarray, shade: bool = True) -> dict[str, np.ndarray]:
        """Cast the rays of pixel positions ``xy`` [P, 2] (any real x, y) with intrinsics ``K``, in frame ``t``
        (an int, or [P] ints: one frame per ray; all rays are traced in one vectorised pass either way).

        Returns (P rays): depth [P] (camera z of the first hit), instance [P] int, point_world [P, 3],
        normal_world [P, 3] (unit, facing the camera), and rgb [P, 3] in [0, 1] when ``shade``.
        """
        xy = np.asarray(xy, np.float64)
        frames = np.asarray(t, np.int64).reshape(-1)  # [1] (one frame for all rays) or [P]
        T_wc = self.camera_poses()[frames]  # [1 | P, 4, 4]
        T_wo = self.object_poses()[frames]  # [1 | P, I, 4, 4]
        d_cam = np.stack([(xy[:, 0] - K[0, 2]) / K[0, 0], (xy[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(xy))], -1)
        origin = T_wc[:, :3, 3]  # [1 | P, 3]
        direction = _rotate(T_wc[:, :3, :3], d_cam)  # [P, 3]; z_cam of the direction is 1: hit t is depth
        depth, normal, face = self._hit_room(origin, direction)
        instance = np.zeros(len(xy), np.int64)
        local = origin + depth[:, None] * direction  # texture frame: the world for the room
        for k, obj in enumerate(self.objects, start=1):
            rays, hit_t, hit_normal, hit_local = self._hit_object(obj, T_wo[:, k], origin, direction)
            nearer = hit_t < depth[rays]
            rays = rays[nearer]
            depth[rays], normal[rays], local[rays], instance[rays] = (
                hit_t[nearer], hit_normal[nearer], hit_local[nearer], k
            )
        point = origin + depth[:, None] * direction
        out = {"depth": depth, "instance": instance, "point_world": point, "normal_world": normal}
        if shade:
            albedo = np.zeros((len(xy), 3))
            textures = [self.floor_texture, self.ceiling_texture, self.wall_texture]
            for f, texture in enumerate(textures):
                m = (instance == BACKGROUND) & (face == f)
                albedo[m] = texture.colour(local[m])
            for k, obj in enumerate(self.objects, start=1):
                m = instance == k
                albedo[m] = obj.texture.colour(local[m])
            lambert = np.clip(normal @ np.asarray(self.light_dir), 0.0, 1.0)
            out["rgb"] = np.clip(albedo * (0.45 + 0.55 * lambert[:, None]), 0.0, 1.0)
        return out

    def _hit_room(self, origin: np.ndarray, direction: np.ndarray):
        """Exit point of rays from inside the room box. origin [1 | P, 3], direction [P, 3] -> t [P], inward
        normal [P, 3], face [P] (0 floor, 1 ceiling, 2 wall)."""
        hx, hy = self.room_half
        lo, hi = np.array([-hx, -hy, 0.0]), np.array([hx, hy, self.room_height])
        moving = np.abs(direction) > _EPS
        safe = np.where(moving, direction, 1.0)
        t_axes = np.where(moving, np.where(direction > 0, hi - origin, lo - origin) / safe, np.inf)
        axis = np.argmin(t_axes, 1)
        rows = np.arange(len(axis))
        t_exit = t_axes[rows, axis]
        normal = np.zeros_like(direction)
        normal[rows, axis] = -np.sign(direction[rows, axis])
        face = np.where(axis == 2, np.where(direction[:, 2] < 0, 0, 1), 2)
        return t_exit, normal, face

    @staticmethod
    def _hit_object(obj: MovingObject, T_wo: np.ndarray, origin: np.ndarray, direction: np.ndarray):
        """Hits of rays with one object, tested only on the rays that meet its bounding sphere.

        Args: T_wo [1 | P, 4, 4] the object's pose (per ray); origin [1 | P, 3]; direction [P, 3].
        Returns rays [Q] (indices of the rays that hit), t [Q], world normal [Q, 3], local point [Q, 3].
        """
        R, oc = T_wo[:, :3, :3], origin - T_wo[:, :3, 3]  # [1 | P, 3, 3], [1 | P, 3]
        # bounding sphere, in world coordinates: |oc + t d|^2 = r^2
        b = (direction * oc).sum(1)
        a = (direction * direction).sum(1)
        disc = b**2 - a * ((oc * oc).sum(1) - obj.bounding_radius**2)
        rays = np.flatnonzero((disc >= 0) & (b <= 0))  # the camera is outside: hits lie ahead when b <= 0

        def rows(x):  # the candidate rays' rows of a [1 | P, ...] array
            return x if len(x) == 1 else x[rays]

        R, oc = rows(R), rows(oc)
        o_local = _rotate(R, oc, inverse=True)  # [1 | Q, 3]
        d_local = _rotate(R, direction[rays], inverse=True)  # [Q, 3]
        if obj.kind == "sphere":
            hit_t = (-b[rays] - np.sqrt(disc[rays])) / a[rays]
        elif obj.kind == "box":
            h = np.asarray(obj.size)
            parallel = np.abs(d_local) <= _EPS
            safe_d = np.where(parallel, 1.0, d_local)
            t1, t2 = (-h - o_local) / safe_d, (h - o_local) / safe_d
            inside_slab = np.broadcast_to(np.abs(o_local) <= h, d_local.shape)
            t_near = np.where(parallel, np.where(inside_slab, -np.inf, np.inf), np.minimum(t1, t2))
            t_far = np.where(parallel, np.where(inside_slab, np.inf, -np.inf), np.maximum(t1, t2))
            enter, leave = t_near.max(1), t_far.min(1)
            hit = (enter <= leave) & (enter > _EPS)
            rays, hit_t, d_local, t_near = rays[hit], enter[hit], d_local[hit], t_near[hit]
            R, o_local = (R, o_local) if len(R) == 1 else (R[hit], o_local[hit])
        else:
            raise ValueError(f"unknown object kind {obj.kind!r}; expected 'sphere' or 'box'")
        p_local = o_local + hit_t[:, None] * d_local
        if obj.kind == "sphere":
            n_local = p_local / obj.size[0]
        else:
            axis = np.argmax(t_near, 1)  # the slab entered last is the face hit
            n_local = np.zeros_like(d_local)
            n_local[np.arange(len(axis)), axis] = -np.sign(d_local[np.arange(len(axis)), axis])
        return rays, hit_t, _rotate(R, n_local), p_local

    # ----- rendering and queries ------------------------------------------------------------------------------
    def render_clip(self, height: int, width: int) -> "RenderedClip":
        """Render every frame at height x width. See :class:`RenderedClip` for the arrays."""
        K = self.intrinsics(height, width)
        xy = pixel_grid(height, width)
        T, shape = self.num_frames, (height, width)
        rgb = np.empty((T, height, width, 3), np.uint8)
        depth = np.empty((T, height, width), np.float32)
        normal = np.empty((T, height, width, 3), np.float32)
        instance = np.empty((T, height, width), np.uint8)
        T_wc = self.camera_poses()
        for t in range(T):
            hit = self.cast(t, xy, K)
            rgb[t] = np.round(hit["rgb"] * 255).reshape(*shape, 3)
            depth[t] = hit["depth"].reshape(shape)
            normal[t] = (hit["normal_world"] @ T_wc[t, :3, :3]).reshape(*shape, 3)  # into camera t
            instance[t] = hit["instance"].reshape(shape)
        return RenderedClip(rgb, depth, normal, instance, K, T_wc, self.object_poses(), self)

    def query(
        self, K: np.ndarray, height: int, width: int, uv: np.ndarray, t_src, t_tgt, t_cam
    ) -> dict[str, np.ndarray]:
        """Exact answers to N queries on a height x width render with intrinsics K.

        Args:
            uv: [N, 2] normalised source positions (u = x / (W - 1), v = y / (H - 1)), in [0, 1].
            t_src, t_tgt, t_cam: [N] integer frame indices in [0, T).
        Returns (float64 unless noted):
            xyz_cam [N, 3]: the point hit at (u, v) in frame t_src, carried to t_tgt, in camera t_cam's frame.
            uv_tgt [N, 2]: its normalised projection in frame t_tgt (may lie outside [0, 1]).
            depth_tgt [N]: its z in camera t_tgt (uv_tgt is meaningful where > 0).
            in_view [N] bool: in front of camera t_tgt and inside the image.
            visible [N] bool: in view and not occluded at t_tgt (exact depth test, see the module doc).
            displacement [N, 3]: P(t_tgt) - P(t_src) in camera t_cam's frame.
            normal [N, 3]: unit surface normal at t_tgt in camera t_cam's frame.
            instance [N] int: 0 for the room, k for object k.
            xyz_world_src, xyz_world_tgt [N, 3]: the point in world coordinates at t_src and t_tgt.
        """
        uv, t_src, t_tgt, t_cam = self._check_queries(uv, t_src, t_tgt, t_cam)
        scale = np.array([width - 1, height - 1], np.float64)
        N = len(uv)
        hit = self.cast(t_src, uv * scale, K, shade=False)
        p_src, n_src, inst = hit["point_world"], hit["normal_world"], hit["instance"]

        T_wo, T_wc = self.object_poses(), self.camera_poses()
        carry = T_wo[t_tgt, inst] @ invert_rigid(T_wo[t_src, inst])  # world at t_src -> world at t_tgt  [N,4,4]
        p_tgt = transform_points(carry, p_src)
        n_tgt = (carry[:, :3, :3] @ n_src[..., None])[..., 0]
        T_cw_cam = invert_rigid(T_wc[t_cam])
        xyz_cam = transform_points(T_cw_cam, p_tgt)
        displacement = (T_cw_cam[:, :3, :3] @ (p_tgt - p_src)[..., None])[..., 0]
        normal = (T_cw_cam[:, :3, :3] @ n_tgt[..., None])[..., 0]

        p_in_tgt = transform_points(invert_rigid(T_wc[t_tgt]), p_tgt)
        z = p_in_tgt[:, 2]
        safe_z = np.where(z > _EPS, z, 1.0)
        xy_tgt = p_in_tgt[:, :2] / safe_z[:, None] * [K[0, 0], K[1, 1]] + K[:2, 2]
        xy_tgt[z <= _EPS] = np.nan
        edge = 1e-6  # pixels: border pixels reprojecting onto themselves stay in view despite round-off
        in_view = (z > _EPS) & (xy_tgt[:, 0] >= -edge) & (xy_tgt[:, 0] <= width - 1 + edge)
        in_view &= (xy_tgt[:, 1] >= -edge) & (xy_tgt[:, 1] <= height - 1 + edge)
        visible = np.zeros(N, bool)
        if in_view.any():
            seen = self.cast(t_tgt[in_view], xy_tgt[in_view], K, shade=False)["depth"]
            visible[in_view] = z[in_view] <= seen * (1 + VISIBILITY_RTOL)
        return {
            "xyz_cam": xyz_cam,
            "uv_tgt": xy_tgt / scale,
            "depth_tgt": z,
            "in_view": in_view,
            "visible": visible,
            "displacement": displacement,
            "normal": normal,
            "instance": inst,
            "xyz_world_src": p_src,
            "xyz_world_tgt": p_tgt,
        }

    def _check_queries(self, uv, t_src, t_tgt, t_cam):
        uv = np.asarray(uv, np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"uv must be [N, 2] (u = x / (W - 1), v = y / (H - 1)), got shape {uv.shape}")
        if not np.isfinite(uv).all() or uv.min(initial=0) < 0 or uv.max(initial=0) > 1:
            raise ValueError("uv must be finite and in [0, 1] (u = x / (W - 1), v = y / (H - 1))")
        ts = []
        for name, t in (("t_src", t_src), ("t_tgt", t_tgt), ("t_cam", t_cam)):
            t = np.broadcast_to(np.asarray(t), (len(uv),))
            if not np.issubdtype(t.dtype, np.integer):
                raise ValueError(f"{name} must hold integer frame indices, got dtype {t.dtype}")
            if len(t) and (t.min() < 0 or t.max() >= self.num_frames):
                raise ValueError(f"{name} has frames in [{t.min()}, {t.max()}], expected [0, {self.num_frames})")
            ts.append(t.astype(np.int64))
        return (uv, *ts)


# ----------------------------------------------------------------------------------------------------------------
# clips: rendered arrays + the scene, on disk as one npz
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class RenderedClip:
    """A rendered clip.

    rgb [T, H, W, 3] uint8; depth [T, H, W] float32 (camera z, metres); normal [T, H, W, 3] float32 (unit, in each
    frame's camera); instance [T, H, W] uint8 (0 room, k object k); K [3, 3]; T_wc [T, 4, 4] camera-to-world;
    T_wo [T, I, 4, 4] object-to-world per instance; room: the :class:`Room` (its parameters answer queries exactly).
    """

    rgb: np.ndarray
    depth: np.ndarray
    normal: np.ndarray | None
    instance: np.ndarray
    K: np.ndarray
    T_wc: np.ndarray
    T_wo: np.ndarray
    room: Room

    @property
    def scene(self) -> Room:
        """Deprecated name of :attr:`room` (kept one release)."""
        warnings.warn("RenderedClip.scene is deprecated; use RenderedClip.room", DeprecationWarning, stacklevel=2)
        return self.room

    @property
    def num_frames(self) -> int:
        return self.rgb.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.rgb.shape[1], self.rgb.shape[2]

    @property
    def aspect_ratio(self) -> float:
        """Width / height of the original video this clip shows (1 / 1 renders keep the original's ratio)."""
        return self.room.aspect

    def query(self, uv, t_src, t_tgt, t_cam) -> dict[str, np.ndarray]:
        """Exact answers (see :meth:`Room.query`) for this clip's size and intrinsics."""
        return self.room.query(self.K, *self.size, uv, t_src, t_tgt, t_cam)


CLIP_KEYS = ("rgb", "depth", "normal", "instance", "K", "T_wc", "T_wo", "scene_json", "format_version")


def write_clip(path: str | Path, clip: RenderedClip) -> Path:
    """Write a clip as one compressed npz (atomically; no pickles: the scene is stored as JSON text)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"clip files end in .npz, got {path}")
    arrays = {k: getattr(clip, k) for k in ("rgb", "depth", "normal", "instance", "K", "T_wc", "T_wo")}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, **arrays, scene_json=np.array(json.dumps(clip.room.to_dict())), format_version=CLIP_FORMAT_VERSION
        )
    return path


def read_clip(path: str | Path, normals: bool = True) -> RenderedClip:
    """Read a clip written by :func:`write_clip`, checking keys, shapes and dtypes. ``normals=False`` skips the
    normal maps (``clip.normal`` is None; :meth:`RenderedClip.query` still answers normals exactly)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no clip at {path}; write one with write_clip or scripts/train_d4rt.py --synthetic N")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            data = {k: z[k] for k in CLIP_KEYS if k in files and (normals or k != "normal")}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable npz ({e}); it may be truncated: regenerate it") from e
    missing = [k for k in CLIP_KEYS if k not in files]
    if missing:
        raise ValueError(f"{path} is not a d4rt clip: missing {missing} (expected keys {list(CLIP_KEYS)})")
    if int(data["format_version"]) != CLIP_FORMAT_VERSION:
        raise ValueError(f"{path} has clip format {int(data['format_version'])}, this d4rt reads {CLIP_FORMAT_VERSION}")
    scene = Room.from_dict(json.loads(str(data["scene_json"])))
    rgb = data["rgb"]
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: rgb must be [T, H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    T, H, W = rgb.shape[:3]
    expected = {
        "depth": (T, H, W), "normal": (T, H, W, 3), "instance": (T, H, W), "K": (3, 3), "T_wc": (T, 4, 4),
        "T_wo": (T, scene.num_instances, 4, 4),
    }
    for key, shape in expected.items():
        if key in data and data[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {data[key].shape}, expected {shape} for a {T}x{H}x{W} clip")
    if scene.num_frames != T:
        raise ValueError(f"{path}: the scene has {scene.num_frames} frames but the arrays have {T}")
    return RenderedClip(rgb, data["depth"], data.get("normal"), data["instance"], data["K"], data["T_wc"], data["T_wo"], scene)


def _render_to(path: Path, seed: int, num_frames: int, size: int) -> Path:
    if not path.is_file():
        write_clip(path, Room.random(seed, num_frames=num_frames).render_clip(size, size))
    return path


def generate_clips(
    directory: str | Path, seeds, num_frames: int, size: int, progress: bool = True, workers: int = 1
) -> list[Path]:
    """Render one S x S clip per seed into ``directory/clip_<seed>.npz`` (kept if already there), in ``workers``
    processes. A clip depends on its seed alone, so the files are the same for any number of workers."""
    from tqdm import tqdm

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    paths = [directory / f"clip_{seed:07d}.npz" for seed in seeds]
    todo = [(path, seed) for path, seed in zip(paths, seeds) if not path.is_file()]
    bar = tqdm(total=len(todo), desc=f"synthetic clips -> {directory}", disable=not progress or not todo)
    if workers <= 1:
        for path, seed in todo:
            _render_to(path, seed, num_frames, size)
            bar.update()
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_render_to, *zip(*todo), [num_frames] * len(todo), [size] * len(todo), chunksize=4):
                bar.update()
    bar.close()
    return paths
