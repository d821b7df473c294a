"""D4RT: encode a video once, decode any number of independent (u, v, t_src, t_tgt, t_cam) queries."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from d4rt.config import D4RTConfig
from d4rt.models.attention import ATTENTION_BACKENDS, DEFAULT_ATTENTION, MultiheadAttention
from d4rt.models.decoder import Decoder, Heads
from d4rt.models.encoder import VideoEncoder
from d4rt.models.inputs import check_aspect_ratio, check_queries, check_video
from d4rt.models.query_embedding import QueryEmbedder


class D4RT(nn.Module):
    """The model. Module names match OpenD4RT's state-dict keys, so its checkpoints map one to one.

    Example:
        >>> model = D4RT(D4RTConfig.preset("tiny"))
        >>> memory = model.encode(video, aspect_ratio)          # video [B, T, 3, S, S] in [0, 1]
        >>> out = model.decode(memory, video, uv, t_src, t_tgt, t_cam)
    """

    def __init__(self, config: D4RTConfig, attention: str = DEFAULT_ATTENTION):
        """``attention``: "sdpa" (default) | "eager" | "triton", a run-time choice (:meth:`set_attention`), not part
        of the config or the checkpoint."""
        super().__init__()
        _check_attention(attention)
        self.config = cfg = config
        self.attention = attention
        self.encoder = VideoEncoder(cfg, attention)
        self.aspect_ratio_proj = nn.Sequential(nn.Linear(1, cfg.enc_dim), nn.GELU(), nn.Linear(cfg.enc_dim, cfg.enc_dim))
        self.memory_proj = nn.Linear(cfg.enc_dim, cfg.dec_dim)
        self.query_embedder = QueryEmbedder(cfg.dec_dim, cfg.num_frames, cfg.fourier_bands, cfg.rgb_patch, cfg.ln_eps)
        self.decoder = Decoder(cfg, attention)
        self.heads = Heads(cfg.dec_dim)
        self.reset_parameters()

    # ----- set-up ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Truncated-normal (std 0.02) weights, zero biases, unit LayerNorms."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, MultiheadAttention):
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
                nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_attention(self, backend: str) -> "D4RT":
        """Switch every attention layer to "eager", "sdpa" or "triton" (weights and config unchanged), or to a
        function ``(q, k, v, scale) -> out`` on [B, H, N, Dh] tensors (see :func:`d4rt.models.attention.attend`)."""
        _check_attention(backend)
        self.attention = backend
        for m in self.modules():
            if isinstance(m, MultiheadAttention):
                m.backend = backend
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----- the two steps --------------------------------------------------------------------------------------
    def encode(self, video: torch.Tensor, aspect_ratio: torch.Tensor | float | None = None) -> torch.Tensor:
        """Encode a clip once.

        Args:
            video: [B, T, 3, S, S] float in [0, 1]; T a multiple of the tubelet's frames, at most num_frames.
            aspect_ratio: original width / height, [B] or [B, 1] or a float; 1.0 when None.
        Returns:
            memory [B, M, D_dec] with M = T / tt * (S / th) * (S / tw) + 1.
        """
        check_video(video, self.config)
        ar = check_aspect_ratio(aspect_ratio, video.shape[0], video.device, self.memory_proj.weight.dtype)
        tokens = self.encoder(video, self.aspect_ratio_proj(ar))
        return self.memory_proj(tokens)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every decoder block's keys and values of a memory (what the encoder graph exports).

        memory [B, M, D] -> keys, values [L, B, H, M, Dh] (contiguous).
        """
        kv = [block.memory_kv(memory) for block in self.decoder.blocks]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def decode_kv(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        video: torch.Tensor,
        uv: torch.Tensor,
        t_src: torch.Tensor,
        t_tgt: torch.Tensor,
        t_cam: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Decode queries against precomputed keys / values [L, B, H, M, Dh] (see :meth:`decode`)."""
        check_queries(uv, t_src, t_tgt, t_cam, video.shape[0], video.shape[1])
        expected = (self.config.dec_depth, video.shape[0], self.config.dec_heads)
        if keys.ndim != 5 or tuple(keys.shape[:3]) != expected or keys.shape != values.shape:
            raise ValueError(
                f"keys / values must be [L, B, H, M, Dh] with L, B, H = {expected}, got {tuple(keys.shape)} and "
                f"{tuple(values.shape)}; compute them with model.memory_kv(memory)"
            )
        x = self.query_embedder(video, uv, t_src, t_tgt, t_cam)
        return self.heads(self.decoder(x, keys, values))

    def decode(
        self,
        memory: torch.Tensor,
        video: torch.Tensor,
        uv: torch.Tensor,
        t_src: torch.Tensor,
        t_tgt: torch.Tensor,
        t_cam: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Answer queries about an encoded clip.

        Args:
            memory: [B, M, D] from :meth:`encode`; video: the same [B, T, 3, S, S] clip (for the RGB patches).
            uv: [B, N, 2] float in [0, 1] (u = x / (S - 1), v = y / (S - 1)).
            t_src, t_tgt, t_cam: [B, N] integer frame indices in [0, T).
        Returns:
            xyz [B, N, 3], uv [B, N, 2], visibility [B, N] (logit), displacement [B, N, 3], normal [B, N, 3],
            confidence [B, N] (logit).
        """
        check_video(video, self.config)
        if memory.ndim != 3 or memory.shape[0] != video.shape[0] or memory.shape[2] != self.config.dec_dim:
            raise ValueError(
                f"memory must be [B, M, {self.config.dec_dim}] with B={video.shape[0]} (from model.encode), "
                f"got {tuple(memory.shape)}"
            )
        if memory.shape[1] != self.config.memory_tokens(video.shape[1]):
            raise ValueError(
                f"memory has {memory.shape[1]} tokens but a {video.shape[1]}-frame video gives "
                f"{self.config.memory_tokens(video.shape[1])}: encode this video to get its memory"
            )
        return self.decode_kv(*self.memory_kv(memory), video, uv, t_src, t_tgt, t_cam)

    def forward(
        self,
        video: torch.Tensor,
        uv: torch.Tensor,
        t_src: torch.Tensor,
        t_tgt: torch.Tensor,
        t_cam: torch.Tensor,
        aspect_ratio: torch.Tensor | float | None = None,
    ) -> dict[str, torch.Tensor]:
        """encode + decode; shapes as in :meth:`encode` and :meth:`decode`."""
        return self.decode(self.encode(video, aspect_ratio), video, uv, t_src, t_tgt, t_cam)

    # ----- checkpoints ----------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (sharded above 2 GB). Never pickles."""
        from d4rt.checkpoint import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, attention: str | None = None, dtype=None, **config_overrides) -> "D4RT":
        """Load a directory written by :meth:`save_pretrained`, checking every name and shape.

        float32 unless ``dtype`` is given (the bundled checkpoint is stored in float16 to stay small)."""
        import torch

        from d4rt.checkpoint import load_pretrained

        return load_pretrained(directory, attention=attention, dtype=dtype or torch.float32, **config_overrides)

    @classmethod
    def from_opend4rt(cls, path: str | Path, attention: str | None = None, **options) -> "D4RT":
        """Load an OpenD4RT ``opend4rt.ckpt`` or its release folder (options: :func:`d4rt.opend4rt.load_opend4rt`)."""
        from d4rt.opend4rt import load_opend4rt

        return load_opend4rt(path, attention=attention, **options)


def _check_attention(backend) -> None:
    if not callable(backend) and backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention={backend!r} is not an attention backend; choose one of {ATTENTION_BACKENDS}")
