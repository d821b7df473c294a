"""Video in: a file (mp4, avi, ... through OpenCV) or an array of frames, resized to the network's S x S.

The network sees square S x S frames; the original width / height goes in as the aspect ratio (design.md).
Frames are resized with ``cv2.INTER_AREA`` (area averaging: the right filter when shrinking, no aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def read_video(path: str | Path, max_frames: int | None = None, start: int = 0, stride: int = 1) -> np.ndarray:
    """Decode a video file into [T, H, W, 3] uint8 RGB, frames start, start + stride, ... (at most max_frames)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    if start < 0 or stride < 1:
        raise ValueError(f"start must be >= 0 and stride >= 1, got start={start}, stride={stride}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(
            f"OpenCV cannot open {path} as a video; convert it to mp4 (H.264) or pass the frames as an array"
        )
    frames = []
    index = 0
    try:
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
