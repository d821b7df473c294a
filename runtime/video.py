"""Video in: a file (mp4, avi, ... through OpenCV) or an array of frames, resized to the network's S x S.

The network sees square S x S frames; the original width / height goes in as the aspect ratio (design.md).
Frames are resized with ``cv2.INTER_AREA`` (area averaging: the right filter when shrinking, no aliasing).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np


@dataclass
class Clip:
    """A clip ready for the encoder.

    frames: [T, S, S, 3] uint8 RGB, the resized frames (colours for point clouds, previews).
    video: [1, T, 3, S, S] float32 in [0, 1], the encoder's input.
    aspect_ratio: original width / height.
    original_size: (height, width) of the original frames.
    """

    frames: np.ndarray
    video: np.ndarray
    aspect_ratio: float
    original_size: tuple[int, int]


VIDEO_HINT = "give a video file (mp4, avi, ...) or a .npy of frames [T, H, W, 3] uint8"
CONVERT_HINT = "convert it with `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`, or pass the frames as a .npy"


def check_video_path(path: str | Path) -> Path:
    """A path that names a file; FileNotFoundError / IsADirectoryError that say which and what to give instead."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"video {path} is a folder, not a video file; {VIDEO_HINT}")
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist; {VIDEO_HINT}")
    return path


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (FFmpeg's C-level log lines such as "moov atom not found") for the block; our
    own error says what went wrong instead."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_video(path: str | Path):
    """An opened ``cv2.VideoCapture`` of a video file (FFmpeg's own log lines silenced); ValueError naming the
    problem (empty file, not a video) and the fix when it cannot be opened."""
    import cv2

    path = check_video_path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"video {path} is empty (0 bytes); {VIDEO_HINT}")
    with quiet_stderr():
        capture = cv2.VideoCapture(str(path))
        opened = capture.isOpened()
    if not opened:
        capture.release()
        raise ValueError(f"video {path} cannot be decoded (not a video, damaged, or a codec OpenCV lacks); "
                         f"{CONVERT_HINT}")
    return capture


def count_frames(path: str | Path) -> int | None:
    """Frames in a .npy (its header) or a video file (the container's count; None when it does not say).

    Raises what :func:`open_video` raises for a file that is not a video."""
    path = check_video_path(path)
    if path.suffix == ".npy":
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path} is not a readable .npy of frames [T, H, W, 3] ({e}); {VIDEO_HINT}") from None
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{path} holds an array of shape {tuple(shape)}, not frames [T, H, W, 3]; {VIDEO_HINT}")
        return int(shape[0])
    import cv2

    capture = open_video(path)
    try:
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return n if n > 0 else None


def read_video(path: str | Path, max_frames: int | None = None, start: int = 0, stride: int = 1) -> np.ndarray:
    """Decode a video file into [T, H, W, 3] uint8 RGB, frames start, start + stride, ... (at most max_frames)."""
    import cv2

    path = check_video_path(path)
    if start < 0 or stride < 1:
        raise ValueError(f"start must be >= 0 and stride >= 1, got start={start}, stride={stride}")
    capture = open_video(path)
    frames = []
    index = 0
    try:
        with quiet_stderr():
            while max_frames is None or len(frames) < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                if index >= start and (index - start) % stride == 0:
                    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                index += 1
    finally:
        capture.release()
    if not frames:
        if index == 0:
            raise ValueError(f"video {path} holds no frame that OpenCV can decode; {CONVERT_HINT}")
        raise ValueError(f"no frames decoded from {path} (start={start}, stride={stride}, {index} frames in the file)")
    return np.stack(frames)


def prepare_clip(frames: np.ndarray, image_size: int) -> Clip:
    """Check and resize frames to the network's ``image_size`` (the frame count is the caller's to check).

    Args:
        frames: [T, H, W, 3] RGB, uint8, or float in [0, 1]; any H, W.
    """
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array [T, H, W, 3] or a video path, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] RGB, got shape {frames.shape}")
    T, H, W, _ = frames.shape
    if H < 2 or W < 2:
        raise ValueError(f"frames are {H}x{W} pixels; need at least 2x2")
    if frames.dtype == np.uint8:
        frames_u8 = frames
    elif np.issubdtype(frames.dtype, np.floating):
        if not np.isfinite(frames).all():
            bad = int((~np.isfinite(frames)).sum())
            raise ValueError(
                f"frames contain {bad} NaN or infinite values; decode the video again or drop those frames"
            )
        lo, hi = float(frames.min()), float(frames.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float frames must be RGB in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; pass uint8 0..255"
            )
        frames_u8 = None
    else:
        raise ValueError(f"frames must be uint8 (0..255) or float in [0, 1], got dtype {frames.dtype}")

    import cv2

    S = image_size
    if frames_u8 is not None:
        resized = np.stack([cv2.resize(f, (S, S), interpolation=cv2.INTER_AREA) for f in frames_u8])
        video = resized.astype(np.float32) / 255.0
    else:
        video = np.stack([cv2.resize(f.astype(np.float32), (S, S), interpolation=cv2.INTER_AREA) for f in frames])
        video = np.clip(video, 0.0, 1.0)  # area averaging stays in range; clip float round-off only
        resized = np.round(video * 255.0).astype(np.uint8)
    video = np.ascontiguousarray(video.transpose(0, 3, 1, 2)[None], dtype=np.float32)  # [1, T, 3, S, S]
    return Clip(frames=resized, video=video, aspect_ratio=W / H, original_size=(H, W))
