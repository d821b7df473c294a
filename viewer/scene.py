"""The 4-D result as a viser scene: a tree of named nodes, time as a slider.

    /cameras/trajectory      the camera centres joined in order
    /cameras/NNNN            a frustum per frame (at most MAX_FRUSTUMS of them, evenly spread) with its image
    /cameras/current         the current frame's frustum, highlighted, with its image
    /points/NNNN             frame NNNN's cloud, sent the first time the slider reaches it, then shown / hidden
    /tracks                  trails: each shown track's last TRAIL frames up to the current one

World = frame 0's camera, OpenCV axes (+y down), so the scene's up direction is -y.
"""

from __future__ import annotations

import threading

import numpy as np

from d4rt.viewer.results import Result

MAX_FRUSTUMS = 60  # frustums with images beyond this make the scene slow to send and hard to read
TRAIL = 12  # frames of history per track trail
TRACK_COLOURMAP_SEED = 7


def rotation_to_wxyz(R: np.ndarray) -> np.ndarray:
    """A rotation matrix [3, 3] -> unit quaternion (w, x, y, z), viser's pose convention."""
    from viser.transforms import SO3

    return SO3.from_matrix(np.asarray(R, np.float64)).wxyz


def vertical_fov(K: np.ndarray, image_size: int) -> float:
    """Vertical field of view (radians) of intrinsics K [3, 3] in pixels of an S x S image."""
    fy = float(K[1, 1])
    return float(2.0 * np.arctan2(image_size / 2.0, fy)) if np.isfinite(fy) and fy > 0 else np.pi / 3


def display_image(frame: np.ndarray, aspect: float, height: int | None = None) -> np.ndarray:
    """The S x S network frame [S, S, 3] stretched back to the video's aspect (W / H) -> [h, round(h * aspect), 3]."""
    import cv2

    h = int(height or frame.shape[0])
    return cv2.resize(frame, (max(1, round(h * aspect)), h), interpolation=cv2.INTER_AREA)


def depth_colour(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """depth [h, w] -> RGB [h, w, 3] uint8 in the preview's colour map (inferno, near bright); no depth: black."""
    import cv2

    valid = np.isfinite(depth) & (depth > 0)
    level = np.clip((np.where(valid, depth, far) - near) / max(far - near, 1e-12), 0.0, 1.0)
    grey = np.rint(255.0 * (1.0 - level)).astype(np.uint8)  # inferno_r: near = 255 (bright)
    rgb = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def track_colours(count: int) -> np.ndarray:
    """A distinct bright colour per track [count, 3] uint8 (HSV hues spread by the golden ratio)."""
    import cv2

    hue = (np.arange(count) * 0.618034 * 180) % 180
    hsv = np.stack([hue, np.full(count, 220), np.full(count, 255)], -1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def trail_segments(xyz: np.ndarray, visible: np.ndarray, t: int, trail: int) -> tuple[np.ndarray, np.ndarray]:
    """The trail of each track up to frame t: segments between consecutive frames in (t - trail, t] where both
    ends are finite and seen. xyz [Q, F, 3], visible [Q, F] bool -> (segments [N, 2, 3], track index [N])."""
    lo = max(0, t - trail)
    if t <= lo:
        return np.zeros((0, 2, 3), np.float32), np.zeros(0, np.int64)
    a, b = xyz[:, lo:t], xyz[:, lo + 1:t + 1]
    ok = visible[:, lo:t] & visible[:, lo + 1:t + 1] & np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    q, _ = np.nonzero(ok)
    return np.stack([a[ok], b[ok]], 1).astype(np.float32), q


class ResultScene:
    """Builds and updates the viser scene of one :class:`Result` on a ``viser.ViserServer``.

    ``show(t)`` is the one way the picture changes with time: the slider, the player and a recording all call it.
    Point clouds are sent lazily (a frame's cloud goes to the browser the first time it is shown) and decimated to
    ``budget`` points per frame; the browser keeps each sent cloud (shown / hidden as time moves) unless
    ``keep_clouds=False`` (a recording: one node replaced per frame, which its player's loop and scrubbing replay).
    """

    def __init__(self, server, result: Result, *, budget: int = 100_000, point_size: float | None = None,
                 tracks: int = 64, frustum_images: bool = True, keep_clouds: bool = True):
        self.server, self.result = server, result
        self.budget, self.tracks = int(budget), int(min(tracks, result.num_tracks))
        size = result.extent()
        most = max(1, min(self.budget, result.most_points_in_a_frame()))
        # about the spacing of the points on screen: the scene's size over the points across it
        self.point_size = float(point_size if point_size is not None else 0.8 * size / np.sqrt(most))
        self.frustum_scale = size / 20.0
        self.current = -1
        self.keep_clouds = keep_clouds
        self._lock = threading.RLock()  # the slider's callbacks and the player thread both move time
        self._clouds: dict[int, object] = {}
        self._trails = None
        self._track_order = result.track_order()
        self._track_rgb = track_colours(result.num_tracks)
        vis = result.tracks["visibility"]
        self._track_seen = np.nan_to_num(vis, nan=0.0) > 0.5
        server.scene.set_up_direction("-y")
        self._add_cameras(frustum_images)
        self._place_initial_camera()

    # -- static parts --------------------------------------------------------------------------------------------
    def _add_cameras(self, with_images: bool) -> None:
        r, scene = self.result, self.server.scene
        S = r.frames.shape[1]
        centres = r.T_wc[:, :3, 3]
        if r.num_frames > 1:
            segments = np.stack([centres[:-1], centres[1:]], 1).astype(np.float32)
            scene.add_line_segments("/cameras/trajectory", segments, (255, 140, 0), thickness=2.0,
                                    thickness_units="screen")
        shown = np.unique(np.linspace(0, r.num_frames - 1, min(MAX_FRUSTUMS, r.num_frames)).round().astype(int))
        for t in shown:
            scene.add_camera_frustum(
                f"/cameras/{int(r.source_frames[t]):04d}", fov=vertical_fov(r.K[t], S), aspect=r.aspect,
                scale=self.frustum_scale * 0.6, thickness=1.0, thickness_units="screen", color=(120, 120, 120),
                image=display_image(r.frames[t], r.aspect, 64) if with_images else None, jpeg_quality=80,
                wxyz=rotation_to_wxyz(r.T_wc[t, :3, :3]), position=centres[t],
            )

    def _place_initial_camera(self) -> None:
        """Behind and above frame 0's camera, looking at the middle of the cloud."""
        r = self.result
        xyz = r.points["xyz"][np.isfinite(r.points["xyz"]).all(1)]
        target = np.median(xyz, 0) if len(xyz) else np.array([0.0, 0.0, 1.0])
        size = r.extent()
        eye = r.T_wc[0, :3, 3] + r.T_wc[0, :3, :3] @ np.array([0.0, -0.15 * size, -0.45 * size])
        self.server.initial_camera.position = tuple(float(v) for v in eye)
        self.server.initial_camera.look_at = tuple(float(v) for v in target)

    # -- time ----------------------------------------------------------------------------------------------------
    def show(self, t: int) -> None:
        """Show frame t: its cloud (sent now if never sent), the highlighted frustum, the track trails."""
        r = self.result
        t = int(np.clip(t, 0, r.num_frames - 1))
        with self._lock, self.server.atomic():
            cloud = self._clouds.get(t)
            if cloud is None:
                xyz, rgb = r.frame_points(t, self.budget)
                name = f"/points/{int(r.source_frames[t]):04d}" if self.keep_clouds else "/points/current"
                cloud = self.server.scene.add_point_cloud(name, xyz.astype(np.float32), rgb,
                                                          point_size=self.point_size, point_shape="rounded")
                if self.keep_clouds:
                    self._clouds[t] = cloud
            cloud.visible = True
            if self.current in self._clouds and self.current != t:
                self._clouds[self.current].visible = False
            self.server.scene.add_camera_frustum(
                "/cameras/current", fov=vertical_fov(r.K[t], r.frames.shape[1]), aspect=r.aspect,
                scale=self.frustum_scale, thickness=3.0, thickness_units="screen", color=(255, 60, 60),
                image=display_image(r.frames[t], r.aspect), jpeg_quality=85,
                wxyz=rotation_to_wxyz(r.T_wc[t, :3, :3]), position=r.T_wc[t, :3, 3])
            self._show_tracks(t)
            self.current = t

    def _show_tracks(self, t: int) -> None:
        chosen = self._track_order[: self.tracks]
        segments, which = trail_segments(self.result.tracks["xyz"][chosen], self._track_seen[chosen], t, TRAIL)
        if not len(segments):
            if self._trails is not None:
                self._trails.visible = False
            return
        colours = np.repeat(self._track_rgb[chosen[which]][:, None], 2, 1)
        self._trails = self.server.scene.add_line_segments("/tracks", segments, colours, thickness=2.5,
                                                           thickness_units="screen")

    # -- controls ------------------------------------------------------------------------------------------------
    def set_budget(self, budget: int) -> None:
        """Points per frame: drop every sent cloud (they are re-sent lazily at the new budget)."""
        with self._lock:
            self.budget = int(budget)
            self._drop_clouds()

    def set_point_size(self, size: float) -> None:
        with self._lock:
            self.point_size = float(size)
            for cloud in self._clouds.values():
                cloud.point_size = self.point_size

    def set_tracks(self, count: int) -> None:
        with self._lock:
            self.tracks = int(np.clip(count, 0, self.result.num_tracks))
            if self.current >= 0:
                self._show_tracks(self.current)

    def _drop_clouds(self) -> None:
        for cloud in self._clouds.values():
            cloud.remove()
        self._clouds.clear()
        if self.current >= 0:
            t, self.current = self.current, -1
            self.show(t)
