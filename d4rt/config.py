"""D4RTConfig: every size of the model, and the presets as data.

Plain dataclass, no torch: the runtime reads configs from engine manifests on machines without torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fields older d4rt versions wrote that no longer mean anything: read without complaint, dropped. ("attention" is
# a run-time choice now: D4RT(config, attention=...), load_pretrained(dir, attention=...).)
RETIRED_FIELDS = ("attention",)


@dataclass
class D4RTConfig:
    """Sizes of a D4RT model.

    Encoder: a ViT over tubelets of ``tubelet`` (t, h, w) pixels; block i is local (per temporal slice) when i is
    even and global when odd. Decoder: ``dec_depth`` cross-attention blocks over the encoder memory.
    """

    name: str = "custom"
    image_size: int = 256  # S: the network sees S x S frames
    num_frames: int = 48  # the most frames a clip may have (size of the time embedding tables)
    tubelet: tuple[int, int, int] = (2, 16, 16)
    # encoder
    enc_dim: int = 1408
    enc_depth: int = 40
    enc_heads: int = 16
    enc_mlp_dim: int = 6144
    # decoder
    dec_dim: int = 1280
    dec_depth: int = 8
    dec_heads: int = 16
    dec_mlp_dim: int = 4480
    # query embedding
    fourier_bands: int = 8
    rgb_patch: int = 9  # side of the local RGB patch sampled around (u, v) in frame t_src
    # misc
    ln_eps: float = 1e-5
    dropout: float = 0.0  # training-time dropout on attention and MLP outputs (OpenD4RT trains with 0.1)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tubelet = tuple(int(x) for x in self.tubelet)  # JSON gives lists
        problems = []
        if self.enc_dim % self.enc_heads:
            problems.append(f"enc_dim={self.enc_dim} is not divisible by enc_heads={self.enc_heads}")
        if self.dec_dim % self.dec_heads:
            problems.append(f"dec_dim={self.dec_dim} is not divisible by dec_heads={self.dec_heads}")
        tt, th, tw = self.tubelet
        if self.image_size % th or self.image_size % tw:
            problems.append(f"image_size={self.image_size} is not a multiple of the tubelet {self.tubelet}")
        if self.num_frames % tt:
            problems.append(f"num_frames={self.num_frames} is not a multiple of the tubelet's {tt} frames")
        if self.rgb_patch % 2 == 0:
            problems.append(f"rgb_patch={self.rgb_patch} must be odd (a patch centred on the query pixel)")
        if problems:
            raise ValueError("invalid D4RTConfig: " + "; ".join(problems))

    # ----- derived sizes -------------------------------------------------------------------------------------
    @property
    def tokens_per_slice(self) -> int:
        """Video tokens of one temporal slice: (S / th) * (S / tw); the local attention window."""
        return (self.image_size // self.tubelet[1]) * (self.image_size // self.tubelet[2])

    def memory_tokens(self, num_frames: int | None = None) -> int:
        """M = T / tt * tokens_per_slice + 1 (the aspect-ratio token)."""
        t = self.num_frames if num_frames is None else num_frames
        return t // self.tubelet[0] * self.tokens_per_slice + 1

    @property
    def enc_head_dim(self) -> int:
        return self.enc_dim // self.enc_heads

    @property
    def dec_head_dim(self) -> int:
        return self.dec_dim // self.dec_heads

    # ----- presets and (de)serialisation ---------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "D4RTConfig":
        """A named preset ("tiny", "base", "g"), with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], "name": name, **overrides})

    def replace(self, **changes: Any) -> "D4RTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tubelet"] = list(self.tubelet)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "D4RTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}; this d4rt version knows {sorted(known)}")
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON, atomically."""
        from d4rt.runtime.files import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "D4RTConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config at {path}: expected the config.json written by save_pretrained")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); re-save the model with save_pretrained") from e
        return cls.from_dict(d)


PRESETS: dict[str, dict[str, Any]] = {
    # Tests and the bundled demo checkpoint: 16 frames, head dim 64, 3.14 M parameters. No weight depends on the
    # input size, so the same weights run at any S (the tests and the bundled checkpoint use S = 128 for speed).
    "tiny": dict(
        image_size=256, num_frames=16, tubelet=(2, 16, 16),
        enc_dim=192, enc_depth=4, enc_heads=3, enc_mlp_dim=768,
        dec_dim=192, dec_depth=2, dec_heads=3, dec_mlp_dim=768,
    ),
    # The seed's card: ViT-B encoder, 512-wide decoder, 9x9 RGB patches.
    "base": dict(
        image_size=256, num_frames=48, tubelet=(2, 16, 16),
        enc_dim=768, enc_depth=12, enc_heads=12, enc_mlp_dim=3072,
        dec_dim=512, dec_depth=6, dec_heads=8, dec_mlp_dim=2048,
    ),
    # OpenD4RT's architecture exactly (../shared/opend4rt): 1,162,494,733 parameters at 48 frames.
    "g": dict(
        image_size=256, num_frames=48, tubelet=(2, 16, 16),
        enc_dim=1408, enc_depth=40, enc_heads=16, enc_mlp_dim=6144,
        dec_dim=1280, dec_depth=8, dec_heads=16, dec_mlp_dim=4480,
    ),
}
