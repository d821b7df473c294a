"""A ``d4rt infer`` results folder read back for viewing: frames, depth, the per-frame cloud, cameras, tracks.

    >>> result = load_result("results/")
    >>> xyz, rgb = result.frame_points(12, budget=100_000)      # frame 12's points, at most 100k of them

Every file is checked when the folder is opened, so a broken folder is one clear error before any server starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# what the viewer reads, and what writes it
NEEDED = ("summary.json", "trajectory.json", "depth.npz", "points.npz", "tracks.npz", "frames")


class ResultError(ValueError):
    """A folder that is not (or no longer) a complete ``d4rt infer`` result; the message says how to make one."""


@dataclass
class Result:
    """One video's results, frame i being source frame ``source_frames[i]``.

    frames [F, S, S, 3] uint8 (the network input); depth [F, n, n] float32 (z in the frame's camera, <= 0 or NaN:
    none); T_wc [F, 4, 4] camera-to-world (frame 0's camera is the world, OpenCV axes); K [F, 3, 3] (pixels of
    S x S); points: xyz [P, 3] (world), rgb [P, 3] uint8, confidence [P], frame [P] (index into source_frames);
    tracks: xyz [Q, F, 3] (world), visibility [Q, F] (probability, NaN before the track starts);
    original_size (H, W) of the video, so aspect = W / H.
    """

    folder: Path
    frames: np.ndarray
    depth: np.ndarray
    source_frames: np.ndarray
    T_wc: np.ndarray
    K: np.ndarray
    points: dict[str, np.ndarray]
    tracks: dict[str, np.ndarray]
    original_size: tuple[int, int]
    _order: list[np.ndarray | None] = field(default_factory=list, repr=False)  # per frame, made when first shown
    _by_frame: np.ndarray | None = field(default=None, repr=False)  # point indices sorted by frame
    _starts: np.ndarray | None = field(default=None, repr=False)  # [F + 1]: frame t's run in _by_frame

    @property
    def num_frames(self) -> int:
        return int(len(self.source_frames))

    @property
    def aspect(self) -> float:
        """Width / height of the original video."""
        return self.original_size[1] / self.original_size[0]

    @property
    def num_tracks(self) -> int:
        return int(self.tracks["xyz"].shape[0])

    def points_in_frame(self, t: int) -> int:
        return int(len(self._frame_order(t)))

    def most_points_in_a_frame(self) -> int:
        return int(np.bincount(self.points["frame"], minlength=self.num_frames).max(initial=0))

    def frame_points(self, t: int, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t's cloud decimated to at most ``budget`` points: xyz [p, 3] float32, rgb [p, 3] uint8.

        The subset is a fixed random order of the frame's points cut at ``budget``, so a smaller budget shows a
        subset of a larger one (what a user expects of a "points per frame" slider) and frames do not flicker.
        """
        order = self._frame_order(t)[: max(int(budget), 0)]
        return self.points["xyz"][order], self.points["rgb"][order]

    def track_order(self, seed: int = 0) -> np.ndarray:
        """The tracks in a fixed random order [Q]: the first k are the k shown, spread over the whole grid."""
        return np.random.default_rng(seed).permutation(self.num_tracks)

    def extent(self) -> float:
        """A length of the scene: the 5-95 % spread of the points (the longest axis), for frustum and trail sizes."""
        xyz = self.points["xyz"]
        xyz = xyz[np.isfinite(xyz).all(1)]
        if not len(xyz):
            return 1.0
        lo, hi = np.percentile(xyz, [5, 95], axis=0)
        return float(max((hi - lo).max(), 1e-6))

    def _frame_order(self, t: int) -> np.ndarray:
        """Frame t's points (finite ones) in a fixed random order; the points are grouped by frame once."""
        if not self._order:
            self._order = [None] * self.num_frames
            self._by_frame = np.argsort(self.points["frame"], kind="stable")
            self._starts = np.searchsorted(self.points["frame"][self._by_frame], np.arange(self.num_frames + 1))
        if self._order[t] is None:
            index = self._by_frame[self._starts[t]:self._starts[t + 1]]
            index = index[np.isfinite(self.points["xyz"][index]).all(1)]
            self._order[t] = np.random.default_rng(t).permutation(index)
        return self._order[t]


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ResultError(f"{path} cannot be read ({e}); rerun `d4rt infer` to rewrite it") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ResultError(f"{path} has no {', '.join(missing)}; rerun `d4rt infer` to rewrite it")
    return arrays


def _read_png_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ResultError(f"{path} is not a readable PNG; rerun `d4rt infer` to rewrite it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_result(folder: str | Path) -> Result:
    """Read and check a ``d4rt infer`` results folder (see docs/runtime.md for its files) -> :class:`Result`.

    Raises :class:`ResultError` (one line: what is wrong, how to fix it) for a folder that is not a result, a
    missing or unreadable file, or files that disagree on the frame count.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultError(f"{folder} is not a folder; give the folder `d4rt infer VIDEO --export DIR --out FOLDER` "
                          f"wrote, or a video with --export DIR")
    if not (folder / "summary.json").is_file() and not (folder / "trajectory.json").is_file():
        raise ResultError(f"{folder} is not a d4rt infer result (no summary.json, no trajectory.json); make one with "
                          f"`d4rt infer VIDEO --export DIR --out {folder}`")
    for name in NEEDED:
        if not (folder / name).exists():
            raise ResultError(f"{folder / name} is missing (the viewer needs {', '.join(NEEDED)}); rerun `d4rt infer` "
                              f"with this version to write the whole result")
    try:
        trajectory = json.loads((folder / "trajectory.json").read_text())
        T_wc = np.asarray(trajectory["T_wc"], np.float64)
        K = np.asarray(trajectory["K"], np.float64)
        original_size = tuple(int(v) for v in trajectory["original_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResultError(f"{folder / 'trajectory.json'} cannot be read ({type(e).__name__}: {e}); rerun "
                          f"`d4rt infer` to rewrite it") from None
    depth = _load_npz(folder / "depth.npz", ("depth", "source_frames"))
    points = _load_npz(folder / "points.npz", ("xyz", "rgb", "confidence", "frame"))
    tracks = _load_npz(folder / "tracks.npz", ("xyz", "visibility"))
    source_frames = depth["source_frames"].astype(np.int64)
    F = len(source_frames)
    width = max(4, len(str(int(source_frames.max()))))
    frame_files = [folder / "frames" / f"{int(f):0{width}d}.png" for f in source_frames]
    for path in frame_files:
        if not path.is_file():
            raise ResultError(f"{path} is missing; rerun `d4rt infer` to write every frame")
    frames = np.stack([_read_png_rgb(p) for p in frame_files])
    checks = {"trajectory.json T_wc": (T_wc.shape, (F, 4, 4)), "trajectory.json K": (K.shape, (F, 3, 3)),
              "depth.npz depth": (depth["depth"].shape[:1], (F,)), "tracks.npz xyz": (tracks["xyz"].shape[1:], (F, 3)),
              "points.npz rgb": (points["rgb"].shape, points["xyz"].shape)}
    for name, (got, want) in checks.items():
        if tuple(got) != tuple(want):
            raise ResultError(f"{folder}: {name} has shape {tuple(got)}, expected {tuple(want)} for {F} frames; the "
                              f"files come from different runs: rerun `d4rt infer`")
    if len(points["frame"]) and not 0 <= int(points["frame"].min()) <= int(points["frame"].max()) < F:
        raise ResultError(f"{folder / 'points.npz'} names frames outside 0 .. {F - 1}; rerun `d4rt infer`")
    return Result(folder=folder, frames=frames, depth=depth["depth"].astype(np.float32), source_frames=source_frames,
                  T_wc=T_wc, K=K, points=points, tracks=tracks, original_size=original_size)
