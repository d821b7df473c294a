"""D4RTDataset: clips + the paper's query sampling -> training / evaluation samples with exact targets.

Each item is one clip (a random window of ``num_frames`` if the clip is longer) and N queries:
- source pixels: ``edge_fraction`` (30%) near depth or motion discontinuities of frame t_src (Sobel on log depth
  and on the per-pixel 3-D motion), the rest uniform over the image; sub-pixel positions;
- times: t_src, t_tgt, t_cam uniform in [0, T); t_cam := t_tgt for ``same_cam_fraction`` (40%) of the queries;
  optionally t_tgt := t_cam := t_src for ``depth_fraction`` of them (pure depth queries; 0 in the paper).
Targets follow the tracked point to t_tgt and express it in t_cam's camera (design.md), from the scene's exact
query answers (:meth:`d4rt.data.synthetic.Scene.query`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from d4rt.data.synthetic import RenderedClip, read_clip
from d4rt.runtime.geometry import invert_rigid, scale_intrinsics, transform_points

EDGE_LOG_DEPTH = 0.05  # Sobel of log depth per pixel above which a pixel is "near a depth discontinuity"
EDGE_MOTION = 0.01  # Sobel of 3-D motion (metres per frame, per pixel) above which a pixel is near a motion edge
UV_RANGE = (-1.0, 2.0)  # 2-D targets outside this (far out of view) are not trained on


def motion_maps(clip: RenderedClip) -> np.ndarray:
    """Per-pixel 3-D motion of the surface seen at each pixel, |P(t+1) - P(t)| (|P(t) - P(t-1)| on the last
    frame), in metres. -> [T, H, W] float32."""
    T, H, W = clip.depth.shape
    y, x = np.mgrid[0:H, 0:W]
    rays = np.stack([(x - clip.K[0, 2]) / clip.K[0, 0], (y - clip.K[1, 2]) / clip.K[1, 1], np.ones((H, W))], -1)
    out = np.empty((T, H, W), np.float32)
    for t in range(T):
        t_next = t + 1 if t + 1 < T else t - 1
        p_world = transform_points(clip.T_wc[t], rays * clip.depth[t][..., None].astype(np.float64))
        carry = clip.T_wo[t_next] @ invert_rigid(clip.T_wo[t])  # [I, 4, 4]: world at t -> world at t_next
        out[t] = np.linalg.norm(transform_points(carry[clip.instance[t]], p_world) - p_world, axis=-1)
    return out


def discontinuity_masks(depth: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Pixels near depth or motion discontinuities: Sobel magnitude (cv2, 3x3, per pixel) of log depth and of
    motion above thresholds. depth, motion [T, H, W] -> [T, H, W] bool."""

    def sobel(img: np.ndarray) -> np.ndarray:
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
        return np.sqrt(gx**2 + gy**2) / 8.0  # a ramp of slope g per pixel gives 8 g: back to per pixel

    masks = np.empty(depth.shape, bool)
    for t in range(depth.shape[0]):
        log_depth = np.log(np.maximum(depth[t], 1e-6)).astype(np.float32)
        masks[t] = (sobel(log_depth) > EDGE_LOG_DEPTH) | (sobel(motion[t].astype(np.float32)) > EDGE_MOTION)
    return masks


def sample_queries(
    rng: np.random.Generator,
    edge_masks: np.ndarray,
    num_queries: int,
    edge_fraction: float = 0.3,
    same_cam_fraction: float = 0.4,
    depth_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The paper's query sampling over a clip with discontinuity masks [T, H, W]; ``depth_fraction`` of the
    queries (drawn after the others) get t_tgt = t_cam = t_src.

    Returns uv [N, 2] (normalised, sub-pixel), t_src, t_tgt, t_cam [N] int64, from_edge [N] bool.
    Frames with no discontinuity pixels give uniform pixels for their edge share.
    """
    T, H, W = edge_masks.shape
    N = int(num_queries)
    t_src = rng.integers(0, T, N)
    t_tgt = rng.integers(0, T, N)
    t_cam = rng.integers(0, T, N)
    same = rng.permutation(N) < round(same_cam_fraction * N)
    t_cam = np.where(same, t_tgt, t_cam)
    if depth_fraction > 0:
        depth_only = rng.permutation(N) < round(depth_fraction * N)
        t_tgt = np.where(depth_only, t_src, t_tgt)
        t_cam = np.where(depth_only, t_src, t_cam)

    pixel = rng.integers(0, H * W, N)  # uniform
    from_edge = rng.permutation(N) < round(edge_fraction * N)
    flat = edge_masks.reshape(T, H * W)
    counts = flat.sum(1)
    from_edge &= counts[t_src] > 0
    if from_edge.any():
        edge_pixels = np.flatnonzero(flat.ravel())  # sorted by frame, then pixel
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        e = np.flatnonzero(from_edge)
        pick = starts[t_src[e]] + (rng.random(len(e)) * counts[t_src[e]]).astype(np.int64)
        pixel[e] = edge_pixels[pick] - t_src[e] * (H * W)
    y, x = np.divmod(pixel, W)
    xy = np.stack([x, y], -1) + rng.uniform(-0.5, 0.5, (N, 2))
    xy = np.clip(xy, 0.0, [W - 1, H - 1])
    uv = xy / np.array([W - 1, H - 1])
    return uv, t_src, t_tgt, t_cam, from_edge


def resize_frames(rgb: np.ndarray, depth: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """rgb [T, H, W, 3] uint8 (area), depth [T, H, W] (nearest) -> size x size."""
    if rgb.shape[1:3] == (size, size):
        return rgb, depth
    rgb = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in rgb])
    depth = np.stack([cv2.resize(d, (size, size), interpolation=cv2.INTER_NEAREST) for d in depth])
    return rgb, depth


class D4RTDataset(Dataset):
    """Clips (npz paths written by :func:`d4rt.data.synthetic.write_clip`) -> D4RT training samples.

    ``fixed_queries``: draw the same queries for an index every time (validation); otherwise fresh ones per draw,
    reproducible from ``seed`` and the order of draws.

    Each item (one clip, fresh queries each time it is drawn):
        video [T, 3, S, S] float in [0, 1]; depth_maps [T, S, S]; intrinsics [3, 3] (pixels of S x S);
        T_wc [T, 4, 4]; aspect_ratio [] (original W / H); window_start [] int64 (first clip frame used);
        coords_uv [N, 2]; t_src, t_tgt, t_cam [N] int64;
        gt_3d [N, 3] (point at t_tgt in camera t_cam); gt_uv [N, 2] (at t_tgt, normalised);
        gt_visibility [N] float {0, 1}; gt_displacement [N, 3] (t_cam frame); gt_normal [N, 3] (t_cam frame);
        valid [N] bool (the 3-D, visibility, displacement and normal targets exist);
        valid_uv [N] bool (the point is in front of camera t_tgt and its uv within UV_RANGE);
        from_edge [N] bool (sampled near a discontinuity).
    """

    def __init__(
        self,
        clips: Sequence[str | Path],
        num_frames: int,
        image_size: int,
        num_queries: int = 2048,
        edge_fraction: float = 0.3,
        same_cam_fraction: float = 0.4,
        depth_fraction: float = 0.0,
        seed: int = 0,
        fixed_queries: bool = False,
        cache: bool = True,
    ):
        if not clips:
            raise ValueError("D4RTDataset needs at least one clip path (generate some with --synthetic N)")
        for name, frac in (("edge_fraction", edge_fraction), ("same_cam_fraction", same_cam_fraction),
                           ("depth_fraction", depth_fraction)):
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {frac}")
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        self.paths = [Path(p) for p in clips]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} clip files do not exist, e.g. {missing[:3]}")
        self.num_frames, self.image_size, self.num_queries = int(num_frames), int(image_size), int(num_queries)
        self.edge_fraction, self.same_cam_fraction = float(edge_fraction), float(same_cam_fraction)
        self.depth_fraction = float(depth_fraction)
        self.seed, self.fixed_queries, self.cache = int(seed), fixed_queries, cache
        self._cache: dict[int, tuple[RenderedClip, np.ndarray]] = {}
        self._frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._draws = 0

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[RenderedClip, np.ndarray]:
        """The clip and its discontinuity masks [T, H, W] (cached per clip)."""
        if index in self._cache:
            return self._cache[index]
        clip = read_clip(self.paths[index], normals=False)  # the scene answers normals exactly
        if clip.num_frames < self.num_frames:
            raise ValueError(
                f"{self.paths[index]} has {clip.num_frames} frames, fewer than the {self.num_frames} the model "
                f"takes; generate longer clips or lower num_frames"
            )
        entry = (clip, discontinuity_masks(clip.depth, motion_maps(clip)))
        if self.cache:
            self._cache[index] = entry
        return entry

    def frames(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole clip at the network's size, resized once (cached with the clip): rgb [F, S, S, 3] uint8,
        depth [F, S, S]."""
        if index in self._frames:
            return self._frames[index]
        clip = self.load(index)[0]
        entry = resize_frames(clip.rgb, clip.depth, self.image_size)
        if self.cache:
            self._frames[index] = entry
        return entry

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.fixed_queries:
            rng = np.random.default_rng([self.seed, index])
        else:
            rng = np.random.default_rng([self.seed, index, self._draws])
            self._draws += 1
        return self.sample(index, rng)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One item of clip ``index`` with queries drawn from ``rng``."""
        clip, edges = self.load(index)
        T = self.num_frames
        start = int(rng.integers(0, clip.num_frames - T + 1))
        window = slice(start, start + T)
        uv, t_src, t_tgt, t_cam, from_edge = sample_queries(
            rng, edges[window], self.num_queries, self.edge_fraction, self.same_cam_fraction, self.depth_fraction
        )
        ans = clip.query(uv, t_src + start, t_tgt + start, t_cam + start)
        H, W = clip.size
        rgb, depth = (x[window] for x in self.frames(index))
        uv_tgt = np.nan_to_num(ans["uv_tgt"], nan=0.0)
        valid_uv = (ans["depth_tgt"] > 1e-3) & np.all((uv_tgt >= UV_RANGE[0]) & (uv_tgt <= UV_RANGE[1]), -1)

        def f32(x):
            return torch.from_numpy(np.ascontiguousarray(x, np.float32))

        return {
            "video": f32(rgb).permute(0, 3, 1, 2) / 255.0,
            "depth_maps": f32(depth),
            "intrinsics": f32(scale_intrinsics(clip.K, H, W, self.image_size)),
            "T_wc": f32(clip.T_wc[window]),
            "aspect_ratio": torch.tensor(clip.aspect_ratio, dtype=torch.float32),
            "window_start": torch.tensor(start, dtype=torch.int64),
            "coords_uv": f32(uv),
            "t_src": torch.from_numpy(t_src),
            "t_tgt": torch.from_numpy(t_tgt),
            "t_cam": torch.from_numpy(t_cam),
            "gt_3d": f32(ans["xyz_cam"]),
            "gt_uv": f32(uv_tgt),
            "gt_visibility": f32(ans["visible"]),
            "gt_displacement": f32(ans["displacement"]),
            "gt_normal": f32(ans["normal"]),
            "valid": torch.ones(len(uv), dtype=torch.bool),
            "valid_uv": torch.from_numpy(valid_uv),
            "from_edge": torch.from_numpy(from_edge),
        }
