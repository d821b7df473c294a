"""Query embedding: Fourier features of (u, v), three learned time tables, a local RGB patch; summed, then LN."""

from __future__ import annotations

import math

import torch
from torch import nn


def fourier_features(uv: torch.Tensor, bands: int) -> torch.Tensor:
    """For each of u then v: [x, sin(x f_0..f_{b-1}), cos(x f_0..f_{b-1})], f_k = 2^k pi.

    uv [B, N, 2] -> [B, N, 2 * (1 + 2 * bands)]
    """
    freqs = (2.0 ** torch.arange(bands, device=uv.device, dtype=uv.dtype)) * math.pi  # [bands]
    parts = []
    for i in range(2):
        x = uv[..., i : i + 1]  # [B, N, 1]
        parts += [x, torch.sin(x * freqs), torch.cos(x * freqs)]
    return torch.cat(parts, dim=-1)


def sample_rgb_patches(video: torch.Tensor, uv: torch.Tensor, t_src: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear size x size patches of frame t_src centred on pixel (u (S-1), v (S-1)), integer pixel offsets.

    The same values as ``F.grid_sample(frame, ..., align_corners=True, padding_mode="border")``, computed with
    gathers from the flattened video so one graph serves every query (ONNX / TensorRT friendly, no per-query
    frame copies).

    Args:
        video: [B, T, 3, S, S]; uv: [B, N, 2] in [0, 1]; t_src: [B, N] integer.
    Returns:
        [B, N, 3 * size * size], channels first ([3, size (y), size (x)] per query).
    """
    B, T, C, H, W = video.shape
    N = uv.shape[1]
    r = size // 2
    offsets = torch.arange(-r, r + 1, device=uv.device, dtype=uv.dtype)  # [size]
    x = (uv[..., 0, None] * (W - 1))[..., None, :] + offsets[None, :]  # [B, N, 1, size]
    y = (uv[..., 1, None] * (H - 1))[..., :, None] + offsets[:, None]  # [B, N, size, 1]
    x, y = x.clamp(0, W - 1), y.clamp(0, H - 1)  # border padding
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0)[:, :, None], (y - y0)[:, :, None]  # [B, N, 1, 1, size], [B, N, 1, size, 1]
    # The upper neighbour is clamped while still float (whole numbers, exact): an int64 clamp exports as an int64
    # Clip, which TensorRT's ONNX parser does not take (Clip: FP32 / FP16 / BF16 only, onnx-tensorrt operators.md).
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    x0, y0, x1, y1 = x0.long(), y0.long(), x1.long(), y1.long()

    flat = video.reshape(B, T * C * H * W)
    channel = torch.arange(C, device=uv.device)[:, None, None] * (H * W)  # [C, 1, 1]
    base = (t_src.long() * (C * H * W))[:, :, None, None, None] + channel  # [B, N, C, 1, 1]

    def gather(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        index = base + (yi * W + xi)[:, :, None]  # [B, N, C, size, size]
        return torch.gather(flat, 1, index.reshape(B, -1)).view(B, N, C, size, size)

    top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy).reshape(B, N, C * size * size)


class QueryEmbedder(nn.Module):
    """(video, uv, t_src, t_tgt, t_cam) -> query tokens [B, N, D]."""

    def __init__(self, dim: int, num_frames: int, bands: int, patch: int, eps: float):
        super().__init__()
        self.bands, self.patch = bands, patch
        self.uv_proj = nn.Linear(2 * (1 + 2 * bands), dim)
        self.t_src_embed = nn.Embedding(num_frames, dim)
        self.t_tgt_embed = nn.Embedding(num_frames, dim)
        self.t_cam_embed = nn.Embedding(num_frames, dim)
        self.patch_proj = nn.Sequential(nn.Linear(3 * patch * patch, dim), nn.GELU(), nn.Linear(dim, dim))
        self.out_norm = nn.LayerNorm(dim, eps=eps)

    def forward(
        self, video: torch.Tensor, uv: torch.Tensor, t_src: torch.Tensor, t_tgt: torch.Tensor, t_cam: torch.Tensor
    ) -> torch.Tensor:
        """video [B, T, 3, S, S], uv [B, N, 2], t_* [B, N] -> [B, N, D]."""
        dtype = self.uv_proj.weight.dtype
        uv = uv.float()
        uv_term = self.uv_proj(fourier_features(uv, self.bands).to(dtype))
        t_term = self.t_src_embed(t_src.long()) + self.t_tgt_embed(t_tgt.long()) + self.t_cam_embed(t_cam.long())
        patches = sample_rgb_patches(video.float(), uv, t_src, self.patch)
        patch_term = self.patch_proj(patches.to(dtype))
        return self.out_norm(uv_term + t_term + patch_term)
