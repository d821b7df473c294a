"""The two deployment graphs as modules around the model (the model itself carries no export special cases).

Encoder graph, once per video:   video [1, T, 3, S, S] float32, aspect_ratio [1] float32
                                 -> keys, values [L, 1, H, M, Dh] (every decoder block's K and V of the memory)
Decoder graph, per query batch:  video, keys, values, uv [1, N, 2] float32, t [1, N, 3] int32 (t_src, t_tgt, t_cam)
                                 -> xyz, uv_tgt, visibility, displacement, normal, confidence (float32)

The model's data-dependent input checks (NaN, ranges) are skipped while torch.export traces; the runtime makes
them on the host before anything reaches a graph.
"""

from __future__ import annotations

import torch
from torch import nn

from d4rt.runtime.manifest import DECODER_OUTPUTS, MODEL_OUTPUT_NAMES


class EncoderGraph(nn.Module):
    """video [1, T, 3, S, S], aspect_ratio [1] -> keys, values [L, 1, H, M, Dh] (float32, or float16 for a
    float16 model)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor, aspect_ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.model.encode(video, aspect_ratio)
        return self.model.memory_kv(memory)


class DecoderGraph(nn.Module):
    """video, keys, values, uv [1, N, 2], t [1, N, 3] int32 -> the six outputs, always float32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, video: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, uv: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out = self.model.decode_kv(keys, values, video, uv, t[..., 0], t[..., 1], t[..., 2])
        return tuple(out[MODEL_OUTPUT_NAMES[name]].float() for name in DECODER_OUTPUTS)
