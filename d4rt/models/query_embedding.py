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

    The same values as ``F.grid_sample(frame, ..., align_corners=True, padding_mode="border")``, computed
    separably: all taps of a query share one fractional offset (wx, wy), so the patch is a linear resample of the
    (size + 1) x (size + 1) window of pixels around it, gathered once (100 values per channel for 9 x 9 instead of
    4 x 81 for four corner gathers), then interpolated along x and along y. Window lines are clamped to the frame
    (border padding): a tap beyond the border reads the same edge pixel from both neighbours, so it gets the edge
    value whatever its weight, as grid_sample's clamped coordinate does. Gathers from the flattened video, so one
    graph serves every query (ONNX / TensorRT friendly, no per-query frame copies).

    Args:
        video: [B, T, 3, S, S]; uv: [B, N, 2] in [0, 1]; t_src: [B, N] integer.
    Returns:
        [B, N, 3 * size * size], channels first ([3, size (y), size (x)] per query).
    """
    B, T, C, H, W = video.shape
    N = uv.shape[1]
    r = size // 2
    x, y = uv[..., 0] * (W - 1), uv[..., 1] * (H - 1)  # [B, N] the patch centre in pixels
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0)[:, :, None, None, None], (y - y0)[:, :, None, None, None]  # [B, N, 1, 1, 1]
    lines = torch.arange(-r, r + 2, device=uv.device, dtype=uv.dtype)  # [size + 1]
    # Clamped while still float (whole numbers, exact): an int64 clamp exports as an int64 Clip, which TensorRT's
    # ONNX parser does not take (Clip: FP32 / FP16 / BF16 only, onnx-tensorrt operators.md).
    cols = (x0[..., None] + lines).clamp(0, W - 1).long()  # [B, N, size + 1]
    rows = (y0[..., None] + lines).clamp(0, H - 1).long()

    flat = video.reshape(B, T * C * H * W)
    channel = torch.arange(C, device=uv.device)[:, None, None] * (H * W)  # [C, 1, 1]
    index = ((t_src.long() * (C * H * W))[:, :, None, None, None] + channel  # [B, N, C, size + 1, size + 1]
             + (rows * W)[:, :, None, :, None] + cols[:, :, None, None, :])
    window = torch.gather(flat, 1, index.reshape(B, -1)).view(B, N, C, size + 1, size + 1)
    across = window[..., :-1] * (1 - wx) + window[..., 1:] * wx  # [B, N, C, size + 1, size]
    patch = across[..., :-1, :] * (1 - wy) + across[..., 1:, :] * wy  # [B, N, C, size, size]
    return patch.reshape(B, N, C * size * size)


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
        """video [B, T, 3, S, S], uv [B, N, 2], t_* [B, N] -> [B, N, D].

        The projections run on 2-D [B * N, features] matrices (a Gemm with its bias in an exported graph)."""
        dtype = self.uv_proj.weight.dtype
        B, N = uv.shape[:2]
        uv = uv.float()
        uv_term = self.uv_proj(fourier_features(uv, self.bands).to(dtype).reshape(B * N, -1))
        t_term = self.t_src_embed(t_src.long()) + self.t_tgt_embed(t_tgt.long()) + self.t_cam_embed(t_cam.long())
        patches = sample_rgb_patches(video.float(), uv, t_src, self.patch)
        patch_term = self.patch_proj(patches.to(dtype).reshape(B * N, -1))
        return self.out_norm((uv_term + patch_term).reshape(B, N, -1) + t_term)
