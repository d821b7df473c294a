"""Checks of the model's inputs: a ValueError that names the tensor, what it was and what was expected.

Nothing is clamped. Value checks (range, NaN) read the data, so they are skipped while torch.compile /
torch.export trace the model; shape checks always run.
"""

from __future__ import annotations

import torch

from d4rt.config import D4RTConfig


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def _finite_in_unit_range(name: str, x: torch.Tensor, hint: str) -> None:
    if _tracing():
        return
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN ({int(torch.isnan(x).sum())} values); {hint}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], expected [0, 1]; {hint}")


def check_video(video: torch.Tensor, config: D4RTConfig) -> None:
    """video: [B, T, 3, S, S] floating point in [0, 1], T a multiple of the tubelet and <= config.num_frames."""
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"video must be a torch.Tensor [B, T, 3, S, S], got {type(video).__name__}")
    S = config.image_size
    if video.ndim != 5:
        raise ValueError(f"video must have 5 dims [B, T, 3, {S}, {S}], got shape {tuple(video.shape)}")
    B, T, C, H, W = video.shape
    if C != 3:
        raise ValueError(f"video must have 3 (RGB) channels in dim 2 [B, T, 3, S, S], got shape {tuple(video.shape)}")
    if (H, W) != (S, S):
        raise ValueError(
            f"video frames are {H}x{W}, this model takes {S}x{S}: resize the frames to {S}x{S} and pass the "
            f"original width/height as aspect_ratio"
        )
    if not video.is_floating_point():
        raise ValueError(f"video must be floating point in [0, 1], got dtype {video.dtype} (divide uint8 by 255)")
    tt = config.tubelet[0]
    if T % tt or T == 0:
        raise ValueError(f"video has T={T} frames; T must be a positive multiple of the tubelet's {tt} frames")
    if T > config.num_frames:
        raise ValueError(
            f"video has T={T} frames, more than this model's {config.num_frames}; split the clip into chunks"
        )
    _finite_in_unit_range("video", video, "expected RGB scaled to [0, 1]")


def check_aspect_ratio(aspect_ratio: torch.Tensor | float | None, batch: int, device, dtype) -> torch.Tensor:
    """aspect_ratio (original W / H): None (1.0), a float, [B] or [B, 1] positive -> [B, 1] tensor."""
    if aspect_ratio is None:
        return torch.ones(batch, 1, device=device, dtype=dtype)
    ar = torch.as_tensor(aspect_ratio, device=device, dtype=dtype)
    if ar.ndim == 0:
        ar = ar.expand(batch)
    if ar.ndim == 2 and ar.shape[1] == 1:
        ar = ar[:, 0]
    if ar.ndim != 1 or ar.shape[0] != batch:
        raise ValueError(f"aspect_ratio must be [B] or [B, 1] with B={batch}, got shape {tuple(ar.shape)}")
    if not _tracing() and not bool(torch.isfinite(ar).all() and (ar > 0).all()):
        raise ValueError(f"aspect_ratio must be finite and > 0 (original width / height), got {ar.tolist()}")
    return ar[:, None]


def check_queries(
    uv: torch.Tensor, t_src: torch.Tensor, t_tgt: torch.Tensor, t_cam: torch.Tensor, batch: int, num_frames: int
) -> None:
    """uv [B, N, 2] float in [0, 1]; t_src, t_tgt, t_cam [B, N] integer in [0, T); N >= 1."""
    for name, x in (("uv", uv), ("t_src", t_src), ("t_tgt", t_tgt), ("t_cam", t_cam)):
        if not isinstance(x, torch.Tensor):
            shape = "[B, N, 2] float" if name == "uv" else "[B, N] int64"
            raise ValueError(f"{name} must be a torch.Tensor {shape}, got {type(x).__name__} "
                             f"(e.g. torch.full((B, N), t) for one frame index t)")
    if uv.ndim != 3 or uv.shape[-1] != 2:
        raise ValueError(f"uv must be [B, N, 2], got shape {tuple(uv.shape)}")
    if uv.shape[0] != batch:
        raise ValueError(f"uv has batch {uv.shape[0]} but the video / memory has batch {batch}")
    if not uv.is_floating_point():
        raise ValueError(f"uv must be floating point (u = x / (S - 1), v = y / (S - 1)), got dtype {uv.dtype}")
    if uv.shape[1] == 0:
        raise ValueError("uv has N = 0 queries; pass at least one query [B, N >= 1, 2]")
    _finite_in_unit_range("uv", uv, "u = x / (S - 1) and v = y / (S - 1) on the S x S input")
    B, N = uv.shape[:2]
    for name, t in (("t_src", t_src), ("t_tgt", t_tgt), ("t_cam", t_cam)):
        if tuple(t.shape) != (B, N):
            raise ValueError(f"{name} must be [B, N] = [{B}, {N}] like uv, got shape {tuple(t.shape)}")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of frame indices, got dtype {t.dtype}")
        if not _tracing() and t.numel():
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= num_frames:
                raise ValueError(f"{name} has frame indices in [{lo}, {hi}], expected [0, {num_frames}) for this clip")
