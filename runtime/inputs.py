"""The input checks of every front end: the in-process runtime, the server's client (``d4rt.serve.Client``, which
checks before it sends) and the server itself. One function per input, one wording: a refusal reads the same
wherever it happens. The C++ runtime mirrors these rules and messages (cpp/).

Each check returns the value in the form the engines take (float32 uv, int32 frame indices) or raises a
ValueError that names the input, what was wrong and what is expected. Numpy only.
"""

from __future__ import annotations

import numpy as np


def check_uv(uv) -> np.ndarray:
    """uv [N, 2] floating point in [0, 1] (u = x / (S - 1), v = y / (S - 1)), finite -> [N, 2] float32."""
    uv = np.asarray(uv)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be [N, 2] (u = x / (S - 1), v = y / (S - 1)), got shape {uv.shape}")
    if not np.issubdtype(uv.dtype, np.floating):
        raise ValueError(f"uv must be floating point in [0, 1], got dtype {uv.dtype} (divide pixels by S - 1)")
    if len(uv) and not np.isfinite(uv).all():
        raise ValueError(f"uv contains {int((~np.isfinite(uv)).sum())} NaN or infinite values")
    if len(uv) and (uv.min() < 0.0 or uv.max() > 1.0):
        raise ValueError(f"uv has values in [{uv.min():.4g}, {uv.max():.4g}], expected [0, 1] (u = x / (S - 1))")
    return np.ascontiguousarray(uv, np.float32)


def check_times(name: str, t, n: int, num_frames: int) -> np.ndarray:
    """Frame indices ``t`` (a scalar or [n]) of a clip of ``num_frames`` frames, integers in [0, num_frames)
    -> [n] int32 (a scalar broadcast)."""
    t = np.asarray(t)
    if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{name} must be integer frame indices, got dtype {t.dtype}")
    if t.ndim > 1 or (t.ndim == 1 and len(t) != n):
        raise ValueError(f"{name} must be a scalar or [N] = [{n}], got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= num_frames):
        raise ValueError(
            f"{name} has frame indices in [{t.min()}, {t.max()}], expected [0, {num_frames}) for this clip"
        )
    return np.broadcast_to(t, (n,)).astype(np.int32)


def check_frame(name: str, t, num_frames: int) -> int:
    """One frame index: an integer in [0, num_frames) -> int."""
    if not isinstance(t, (int, np.integer)) or isinstance(t, bool):
        raise ValueError(f"{name} must be an integer frame index, got {t!r}")
    check_times(name, t, 1, num_frames)
    return int(t)


def check_frames(name: str, frames, num_frames: int) -> np.ndarray:
    """Frames of a clip: None (all of them), one index or a list of indices in [0, num_frames) -> [F] int64."""
    frames = np.arange(num_frames) if frames is None else np.atleast_1d(np.asarray(frames))
    if frames.ndim != 1:
        raise ValueError(f"{name} must be a frame index or a list of them, got shape {frames.shape}")
    check_times(name, frames, len(frames), num_frames)
    return frames.astype(np.int64)


def check_batch_size(batch_size) -> int:
    """Queries per engine call: a positive integer -> int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def check_grid_size(name: str, size, default: int) -> int:
    """None -> default; else an integer >= 2 (a grid spans the image corner to corner: one point has no extent,
    and poses need at least 3 non-collinear points, intrinsics points off the centre lines)."""
    if size is None:
        return int(default)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(
            f"{name} must be an integer >= 2 (queries per side of the grid, corner to corner), got {size!r}; "
            f"leave it None for the default ({default})"
        )
    return int(size)


def check_aspect_ratio(aspect_ratio) -> float | None:
    """None, or a positive finite number (width / height, e.g. 16 / 9), as a float."""
    if aspect_ratio is None:
        return None
    if isinstance(aspect_ratio, bool) or not isinstance(aspect_ratio, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"aspect_ratio must be a number, the original width / height (e.g. 16 / 9 = 1.778), got "
            f"{aspect_ratio!r} of type {type(aspect_ratio).__name__}"
        )
    if not np.isfinite(aspect_ratio) or aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be a positive width / height, got {aspect_ratio!r}")
    return float(aspect_ratio)


def check_queries(uv, t_src, t_tgt, t_cam, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """One query batch: uv [N, 2] and the three frame-index columns (scalars or [N]) -> uv [N, 2] float32 and
    t [N, 3] int32 (t_src, t_tgt, t_cam), the decoder's inputs."""
    uv = check_uv(uv)
    N = len(uv)
    times = (("t_src", t_src), ("t_tgt", t_tgt), ("t_cam", t_cam))
    return uv, np.stack([check_times(name, x, len(uv), num_frames) for name, x in times], -1)
