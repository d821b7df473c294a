"""What a training run takes besides the architecture: the clips (:class:`TrainingClips`) and the options
(:class:`TrainOptions`). Torch-free, so the CLI validates every argument before anything heavy is imported."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")
# The package's precision names (``d4rt train --precision bf16``) -> Lightning's. bf16 is mixed precision: float32
# weights and optimiser state, matmuls / attention under torch.autocast(bfloat16), on the CPU and on GPUs.
PRECISION_ALIASES = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
SAVE_DTYPES = ("float32", "float16")


@dataclass
class TrainingClips:
    """Clip files (``*.npz`` of :func:`d4rt.data.synthetic.write_clip`) to train on and to validate on."""

    train: list[Path]
    val: list[Path] = field(default_factory=list)

    def __post_init__(self):
        self.train, self.val = [Path(p) for p in self.train], [Path(p) for p in self.val]
        if not self.train:
            raise ValueError("TrainingClips.train is empty: give at least one clip (generate some with "
                             "synthetic_clips or `d4rt train --synthetic N`)")


@dataclass
class TrainOptions:
    """Everything about a training run except the architecture (a :class:`D4RTConfig`) and the clips.

    Steps count optimiser steps; each step sees ``batch_size`` clips per device and ``num_queries`` queries each.
    """

    output_dir: Path = Path("runs/d4rt")
    num_queries: int = 2048
    batch_size: int = 1
    num_workers: int = 0
    depth_fraction: float = 0.0  # share of queries with t_src = t_tgt = t_cam (pure depth); the paper: 0
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.03
    warmup_steps: int = 1000
    confidence_warmup_steps: int = 1000
    token_depth_weight: float = 0.0  # auxiliary per-token depth loss on the memory (training only)
    own_token_weight: float = 0.0  # auxiliary own-token attention loss, first decoder block, head 0
    own_token_init: bool = False  # set that head's query / key rows to find the own token before training
    max_steps: int = -1  # -1: stop by epochs
    max_epochs: int | None = None
    max_minutes: float | None = None  # also stop after this much training time (resume with ``resume``)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None  # fp32 | bf16 | fp16 or Lightning's name; None: bf16-mixed on GPUs, 32-true on CPU
    val_every: int | None = None  # validate every this many steps (None: once per epoch)
    ckpt_every: int | None = None  # write last.ckpt every this many steps
    log_every: int = 10
    seed: int = 0
    init: Path | None = None  # start from these save_pretrained weights
    resume: Path | None = None  # resume from a Lightning .ckpt
    save_dtype: str = "float32"

    def __post_init__(self):
        for name in ("num_queries", "batch_size", "num_nodes", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "warmup_steps", "confidence_warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "token_depth_weight", "own_token_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0.0 <= self.depth_fraction <= 1.0:
            raise ValueError(f"depth_fraction must be in [0, 1], got {self.depth_fraction}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be a positive number of steps or -1 (by epochs), got {self.max_steps}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        for name in ("val_every", "ckpt_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 step, got {getattr(self, name)}")
        self.precision = PRECISION_ALIASES.get(self.precision, self.precision)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {(*PRECISION_ALIASES, *PRECISIONS)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype {self.save_dtype!r} is not one of {SAVE_DTYPES}")
        self.output_dir = Path(self.output_dir)
        self.init = None if self.init is None else Path(self.init)
        self.resume = None if self.resume is None else Path(self.resume)

    def replace(self, **changes) -> "TrainOptions":
        return dataclasses.replace(self, **changes)
