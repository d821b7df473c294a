"""OpenD4RT's forward pass written from the facts file alone (../shared/opend4rt/README.md), in float64.

Independent of d4rt.models: it reads an OpenD4RT-named state dict directly and uses torch's own building blocks
the facts name (F.multi_head_attention_forward: torch.nn.MultiheadAttention's semantics with the packed
in_proj_weight; F.layer_norm; F.grid_sample; an explicit tubelet matmul for the Conv3d). ``details`` lets a test
change one detail (heads, which blocks are local, the GELU) to show the comparison would catch it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-5  # every LayerNorm


def _ln(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=EPS)


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _gelu(x, details):
    if details.get("gelu") == "tanh":
        return F.gelu(x, approximate="tanh")
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # exact (erf) GELU


def mha(query, key, value, sd, name, heads):
    """torch.nn.MultiheadAttention (batch first, no masks, eval) with the state dict's packed weights.

    query [B, Nq, C], key / value [B, Nk, C] -> [B, Nq, C]."""
    C = query.shape[-1]
    out, _ = F.multi_head_attention_forward(
        query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1),
        embed_dim_to_check=C, num_heads=heads,
        in_proj_weight=sd[f"{name}.in_proj_weight"], in_proj_bias=sd[f"{name}.in_proj_bias"],
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=sd[f"{name}.out_proj.weight"], out_proj_bias=sd[f"{name}.out_proj.bias"],
        training=False, need_weights=False,
    )  # fmt: skip
    return out.transpose(0, 1)


def feed_forward(x, sd, name, details):
    return _linear(_gelu(_linear(x, sd, f"{name}.0"), details), sd, f"{name}.3")


def encoder_block(x, sd, name, heads, details=None):
    """x = x + MHA(LN_attn(x)); x = x + FF(LN_ff(x)). x [B, N, C]."""
    details = details or {}
    y = _ln(x, sd, f"{name}.norm_attn")
    x = x + mha(y, y, y, sd, f"{name}.attn", heads)
    return x + feed_forward(_ln(x, sd, f"{name}.norm_ff"), sd, f"{name}.ff", details)


def decoder_block(x, memory, sd, name, heads, details=None):
    """x = x + MHA(LN_q(x), LN_kv(memory), LN_kv(memory)); x = x + FF(LN_ff(x)). x [B, N, C], memory [B, M, C]."""
    details = details or {}
    m = _ln(memory, sd, f"{name}.norm_kv")
    x = x + mha(_ln(x, sd, f"{name}.norm_q"), m, m, sd, f"{name}.cross_attn", heads)
    return x + feed_forward(_ln(x, sd, f"{name}.norm_ff"), sd, f"{name}.ff", details)


def position_table(n: int, d: int) -> torch.Tensor:
    """channel 2i = sin(n / 10000^(2i/d)), channel 2i+1 = cos(same). -> [n, d] float64."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    angle = pos / 10000.0 ** (2 * torch.arange(d // 2, dtype=torch.float64) / d)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(n, d)


def patch_tokens(video, sd):
    """Conv3d, kernel = stride = tubelet, over [B, 3, T, H, W], flattened (t', h', w') C-order, as one matmul over
    explicitly cut tubelets. video [B, T, 3, S, S] -> [B, N, C]."""
    W = sd["encoder.patch_embed.weight"]  # [C, 3, tt, th, tw]
    C, _, tt, th, tw = W.shape
    B, T, _, S, _ = video.shape
    x = video.permute(0, 2, 1, 3, 4).reshape(B, 3, T // tt, tt, S // th, th, S // tw, tw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, -1, 3 * tt * th * tw)  # token n = (t' * h + i) * w + j
    return x @ W.reshape(C, -1).T + sd["encoder.patch_embed.bias"]


def encode(sd, video, aspect_ratio, heads, details=None):
    """video [B, T, 3, S, S], aspect_ratio [B] -> memory [B, N + 1, D]."""
    details = details or {}
    x = patch_tokens(video, sd)
    B, N, C = x.shape
    x = x + position_table(N, C)
    a = aspect_ratio.reshape(B, 1)
    a = _linear(_gelu(_linear(a, sd, "aspect_ratio_proj.0"), details), sd, "aspect_ratio_proj.2")
    x = torch.cat([x, a[:, None]], dim=1)
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.blocks."))
    tt = sd["encoder.patch_embed.weight"].shape[2]
    slices, per_slice = video.shape[1] // tt, N // (video.shape[1] // tt)
    local_parity = details.get("local_parity", 0)
    for i in range(depth):
        name = f"encoder.blocks.{i}"
        if i % 2 == local_parity:  # local: each temporal slice alone, the aspect token skips the block
            v = encoder_block(x[:, :N].reshape(B * slices, per_slice, C), sd, name, heads, details)
            x = torch.cat([v.reshape(B, N, C), x[:, N:]], dim=1)
        else:
            x = encoder_block(x, sd, name, heads, details)
    return _linear(_ln(x, sd, "encoder.final_norm"), sd, "memory_proj")


def fourier(uv, bands=8):
    parts = []
    for c in range(2):
        x = uv[..., c : c + 1]
        f = x * (2.0 ** torch.arange(bands, dtype=torch.float64)) * math.pi
        parts += [x, torch.sin(f), torch.cos(f)]
    return torch.cat(parts, -1)


def rgb_patches(video, uv, t_src, size=9):
    """grid_sample(align_corners=True, border) of size x size pixels around (u (W-1), v (H-1)), [3, size, size]."""
    B, _, _, H, W = video.shape
    N = uv.shape[1]
    r = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float64)
    out = []
    for b in range(B):
        frames = video[b, t_src[b]]  # [N, 3, H, W]
        x = uv[b, :, 0, None, None] * (W - 1) + r[None, None, :]  # [N, 1, size]
        y = uv[b, :, 1, None, None] * (H - 1) + r[None, :, None]  # [N, size, 1]
        grid = torch.stack(torch.broadcast_tensors(x / (W - 1) * 2 - 1, y / (H - 1) * 2 - 1), -1)
        s = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)
        out.append(s.reshape(N, -1))
    return torch.stack(out)


def embed_queries(sd, video, uv, t_src, t_tgt, t_cam, details=None):
    details = details or {}
    q = "query_embedder"
    bands = (sd[f"{q}.uv_proj.weight"].shape[1] // 2 - 1) // 2
    size = math.isqrt(sd[f"{q}.patch_proj.0.weight"].shape[1] // 3)
    token = _linear(fourier(uv, bands), sd, f"{q}.uv_proj")
    token = token + sd[f"{q}.t_src_embed.weight"][t_src] + sd[f"{q}.t_tgt_embed.weight"][t_tgt]
    token = token + sd[f"{q}.t_cam_embed.weight"][t_cam]
    p = _gelu(_linear(rgb_patches(video, uv, t_src, size), sd, f"{q}.patch_proj.0"), details)
    token = token + _linear(p, sd, f"{q}.patch_proj.2")
    return _ln(token, sd, f"{q}.out_norm")


HEADS = ("xyz", "uv", "visibility", "displacement", "normal", "confidence")


def forward(sd, video, aspect_ratio, uv, t_src, t_tgt, t_cam, enc_heads, dec_heads, details=None):
    """The whole model in float64. Returns the six outputs (visibility, confidence squeezed to [B, N])."""
    sd = {k: v.double() for k, v in sd.items()}
    video, uv, aspect_ratio = video.double(), uv.double(), torch.as_tensor(aspect_ratio).double()
    memory = encode(sd, video, aspect_ratio, enc_heads, details)
    x = embed_queries(sd, video, uv, t_src, t_tgt, t_cam, details)
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.blocks."))
    for i in range(depth):
        x = decoder_block(x, memory, sd, f"decoder.blocks.{i}", dec_heads, details)
    x = _ln(x, sd, "decoder.out_norm")
    out = {name: _linear(x, sd, f"heads.{name}_head") for name in HEADS}
    out["visibility"], out["confidence"] = out["visibility"][..., 0], out["confidence"][..., 0]
    return out
