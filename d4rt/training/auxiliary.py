"""Training-only signals that teach the model to read per-token depth from the video. None is exported.

The tiny checkpoint learnt the rooms' layout but not the video: a linear probe found no token depth in the encoder
memory, and the decoder's attention on the query's own token stayed near uniform (docs/training.md). Each side
waits for the other (the decoder cannot use depth the memory lacks; the encoder gets no gradient for depth the
decoder does not read). Two auxiliary losses break that start; both act on training only and leave the exported
graphs exactly the paper's:

- :class:`TokenDepthHead` + :func:`token_depth_loss`: a linear head on every memory token predicts the log depth
  of each pixel of its tubelet (tt x th x tw values), shift-invariant (each clip's mean log depth removed on both
  sides), so the memory holds token geometry from the first step. The head lives in the LightningModule, not in
  :class:`~d4rt.models.D4RT`, so ``save_pretrained`` and the export never see it.
- :func:`own_token_attention_loss`: -log of the attention weight that one head of the first decoder block puts on
  the query's own token (the tubelet holding pixel (u, v) of frame t_src), so a query finds its token from the
  start. The other heads stay free to gather context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tubelet_log_depth(depth_maps: torch.Tensor, tubelet: tuple[int, int, int]) -> torch.Tensor:
    """Per-token log depth with each clip's mean removed.

    depth_maps [B, T, S, S] (metres, > 0) -> [B, T/tt * (S/th) * (S/tw), tt * th * tw], tokens in the encoder's
    (t', h', w') order, values per token in (tt, th, tw) order.
    """
    tt, th, tw = tubelet
    B, T, H, W = depth_maps.shape
    if T % tt or H % th or W % tw:
        raise ValueError(f"depth maps {tuple(depth_maps.shape)} do not tile into tubelets {tubelet}")
    log_depth = torch.log(depth_maps.float().clamp(min=1e-3))
    log_depth = log_depth - log_depth.mean(dim=(1, 2, 3), keepdim=True)
    blocks = log_depth.reshape(B, T // tt, tt, H // th, th, W // tw, tw).permute(0, 1, 3, 5, 2, 4, 6)
    return blocks.reshape(B, (T // tt) * (H // th) * (W // tw), tt * th * tw)


class TokenDepthHead(nn.Module):
    """Linear map from a memory token [.., D] to the log depth of its tubelet's pixels [.., tt * th * tw]."""

    def __init__(self, dim: int, tubelet: tuple[int, int, int]):
        super().__init__()
        self.tubelet = tuple(tubelet)
        self.proj = nn.Linear(dim, tubelet[0] * tubelet[1] * tubelet[2])
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """memory [B, M, D] (the aspect token last, dropped) -> [B, M - 1, tt * th * tw]."""
        return self.proj(memory[:, :-1])


def token_depth_loss(pred: torch.Tensor, depth_maps: torch.Tensor, tubelet: tuple[int, int, int]) -> torch.Tensor:
    """L1 between predicted and true per-pixel log depth, each with its per-clip mean removed (scale-invariant).

    pred [B, N, tt * th * tw] from :class:`TokenDepthHead`; depth_maps [B, T, S, S]. -> scalar.
    """
    target = tubelet_log_depth(depth_maps, tubelet)
    if pred.shape != target.shape:
        raise ValueError(f"token depth prediction {tuple(pred.shape)} does not match the target {tuple(target.shape)}")
    pred = pred.float() - pred.float().mean(dim=(1, 2), keepdim=True)
    return (pred - target).abs().mean()


def own_token_index(uv: torch.Tensor, t_src: torch.Tensor, image_size: int, tubelet: tuple[int, int, int]) -> torch.Tensor:
    """Index of the memory token holding pixel (u (S-1), v (S-1)) of frame t_src (nearest pixel centre).

    uv [B, N, 2] in [0, 1], t_src [B, N] -> [B, N] int64 in (t', h', w') order.
    """
    tt, th, tw = tubelet
    S = image_size
    x = torch.round(uv[..., 0].float() * (S - 1)).long().clamp(0, S - 1)
    y = torch.round(uv[..., 1].float() * (S - 1)).long().clamp(0, S - 1)
    return (t_src.long() // tt) * ((S // th) * (S // tw)) + (y // th) * (S // tw) + x // tw


def own_token_attention_loss(
    model, x: torch.Tensor, keys: torch.Tensor, own: torch.Tensor, head: int = 0
) -> torch.Tensor:
    """Mean -log attention weight of ``head`` of the first decoder block on each query's own token.

    model: :class:`~d4rt.models.D4RT`; x [B, N, D] the query embeddings; keys [L, B, H, M, Dh] (``memory_kv``);
    own [B, N] from :func:`own_token_index`. -> scalar.
    """
    block = model.decoder.blocks[0]
    attn = block.cross_attn
    lo, hi = head * attn.head_dim, (head + 1) * attn.head_dim
    q = F.linear(block.norm_q(x), attn.in_proj_weight[lo:hi], attn.in_proj_bias[lo:hi])  # [B, N, Dh]
    scores = q.float() @ keys[0, :, head].float().transpose(-1, -2) / attn.head_dim**0.5  # [B, N, M]
    log_weights = torch.log_softmax(scores, dim=-1)
    return -log_weights.gather(-1, own[..., None]).mean()
