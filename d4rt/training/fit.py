"""Training: the LightningModule, its optimiser and schedule, and the ``d4rt train`` command.

- AdamW (betas 0.9 / 0.999), weight decay 0.03 on weight matrices only (biases, LayerNorms and the aspect-ratio
  input layer's 1-D parameters are not decayed).
- Learning rate: linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine from ``lr`` to ``min_lr``
  (1e-4 -> 1e-6) at the last step.
- Gradient clipping at norm 10; bf16 mixed precision on GPUs, float32 on the CPU.
- Several GPUs or nodes: Lightning's DDP (``--devices 8 --strategy ddp --num_nodes 2``); each process draws its
  own queries, the batch size is per device.
- Checkpoints: Lightning's ``.ckpt`` while training (resume with ``--resume``); at the end the weights are written
  in the save_pretrained format (``<output_dir>/pretrained``); :func:`export_pretrained` converts any ``.ckpt``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import lightning as L
import torch

from d4rt.data.synthetic import TRAIN_SEED_BASE, VAL_SEED_BASE
from d4rt.config import D4RTConfig
from d4rt.models import D4RT
from d4rt.training.losses import LossWeights, d4rt_losses



class WarmupCosine:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine to ``min_lr / lr`` at
    ``total_steps`` (held there after). A plain object so the scheduler's state saves without pickling code."""

    def __init__(self, warmup_steps: int, total_steps: int, lr: float, min_lr: float):
        self.warmup_steps, self.total_steps = int(warmup_steps), max(int(total_steps), 1)
        self.floor = float(min_lr) / float(lr)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class D4RTLightningModule(L.LightningModule):
    """D4RT + the paper's losses. Batches are :class:`d4rt.data.dataset.D4RTDataset` items, stacked."""

    def __init__(
        self,
        config: dict,
        lr: float = 1e-4,
        min_lr: float = 1e-6,
        weight_decay: float = 0.03,
        warmup_steps: int = 1000,
        total_steps: int | None = None,
        confidence_warmup_steps: int = 1000,
        loss_weights: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()  # plain types only: Lightning checkpoints then load with weights_only=True
        self.model = D4RT(D4RTConfig.from_dict(config))
        self.loss_weights = LossWeights(**(loss_weights or {}))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(
            batch["video"], batch["coords_uv"], batch["t_src"], batch["t_tgt"], batch["t_cam"], batch["aspect_ratio"]
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hold = self.global_step < self.hparams.confidence_warmup_steps
        terms = d4rt_losses(self(batch), batch, self.loss_weights, hold_confidence=hold)
        B = batch["video"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=B)
        return terms["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch)
        terms = d4rt_losses(pred, batch, self.loss_weights, hold_confidence=False)
        B = batch["video"].shape[0]
        self.log("val/loss", terms["loss"], prog_bar=True, batch_size=B, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=B, sync_dist=True)
        vis_ok = ((pred["visibility"] > 0) == (batch["gt_visibility"] > 0.5)).float()
        self.log("val/visibility_acc", vis_ok[batch["valid"]].mean(), batch_size=B, sync_dist=True)

    def configure_optimizers(self):
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        total = self.hparams.total_steps or int(self.trainer.estimated_stepping_batches)
        schedule = WarmupCosine(self.hparams.warmup_steps, total, self.hparams.lr, self.hparams.min_lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def export_pretrained(ckpt_path: str | Path, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Convert a Lightning ``.ckpt`` of :class:`D4RTLightningModule` into the save_pretrained format.

    The checkpoint is read with ``weights_only=True`` (no arbitrary unpickling). ``dtype`` (e.g. torch.float16)
    casts the floating-point weights, for a smaller file.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no Lightning checkpoint at {ckpt_path}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if "state_dict" not in ckpt or "config" not in ckpt.get("hyper_parameters", {}):
        raise ValueError(
            f"{ckpt_path} is not a D4RTLightningModule checkpoint (no state_dict / hyper_parameters.config)"
        )
    model = D4RT(D4RTConfig.from_dict(ckpt["hyper_parameters"]["config"]))
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    from d4rt.checkpoint import check_state_dict

    check_state_dict(
        {k: tuple(v.shape) for k, v in model.state_dict().items()},
        {k: tuple(v.shape) for k, v in state.items()},
        str(ckpt_path),
    )
    model.load_state_dict(state)
    return save_weights(model, directory, dtype)


def save_weights(model: D4RT, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """model.save_pretrained, optionally with the floating-point weights cast to ``dtype`` (a copy)."""
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        model = D4RT(model.config.replace()).to(dtype).eval()
        model.load_state_dict(state)
    return model.save_pretrained(directory)


# ----------------------------------------------------------------------------------------------------------------
# the command (arguments in cli/train.py)
# ----------------------------------------------------------------------------------------------------------------
def resolve_config(args: argparse.Namespace) -> D4RTConfig:
    config = D4RTConfig.preset(args.preset)
    changes = {}
    if args.img_size is not None:
        changes["image_size"] = args.img_size
    if args.num_frames is not None:
        changes["num_frames"] = args.num_frames
    return config.replace(**changes) if changes else config


def prepare_clips(args: argparse.Namespace, config: D4RTConfig) -> tuple[list[Path], list[Path]]:
    """Generate synthetic clips if asked, then list the training and validation clips."""
    from d4rt.data.datamodule import find_clips
    from d4rt.data.synthetic import generate_clips

    train_dir = args.train_data_path or args.output_dir / "data" / "train"
    val_dir = args.val_data_path or (args.output_dir / "data" / "val" if args.synthetic else None)
    if args.synthetic:
        T, S = config.num_frames, config.image_size
        workers = max(1, args.num_workers)
        generate_clips(train_dir, range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + args.synthetic), T, S, workers=workers)
        num_val = max(2, min(20, args.synthetic // 10))
        generate_clips(val_dir, range(VAL_SEED_BASE, VAL_SEED_BASE + num_val), T, S, workers=workers)
    elif args.train_data_path is None:
        raise ValueError("give --train_data_path (a folder of clips) or --synthetic N to generate N clips")
    return find_clips(train_dir), (find_clips(val_dir) if val_dir is not None else [])


def fit(args: argparse.Namespace) -> int:
    """Train from the parsed ``d4rt train`` arguments (see :mod:`d4rt.cli.train`)."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from d4rt.data.datamodule import D4RTDataModule

    L.seed_everything(args.seed, workers=True)
    config = resolve_config(args)
    train_clips, val_clips = prepare_clips(args, config)
    data = D4RTDataModule(
        train_clips, val_clips, config.num_frames, config.image_size, args.num_queries, args.batch_size,
        args.num_workers, args.seed,
    )
    module = D4RTLightningModule(
        config.to_dict(), lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, total_steps=args.max_steps if args.max_steps > 0 else None,
        confidence_warmup_steps=args.confidence_warmup_steps,
    )
    if args.init is not None:
        module.model.load_state_dict(D4RT.from_pretrained(args.init).float().state_dict())
    on_gpu = args.accelerator in ("gpu", "cuda") or (args.accelerator == "auto" and torch.cuda.is_available())
    precision = args.precision or ("bf16-mixed" if on_gpu else "32-true")
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=precision,
        max_epochs=args.max_epochs if args.max_epochs is not None else (None if args.max_steps > 0 else 1),
        max_steps=args.max_steps,
        max_time=None if args.max_minutes is None else {"seconds": round(60 * args.max_minutes)},
        gradient_clip_val=10.0,
        gradient_clip_algorithm="norm",
        logger=CSVLogger(args.output_dir, name="logs"),
        callbacks=[
            ModelCheckpoint(
                dirpath=args.output_dir / "checkpoints", save_last=True, save_top_k=0,
                every_n_train_steps=args.ckpt_every,
            ),
            LearningRateMonitor(logging_interval="step"),
        ],
        log_every_n_steps=args.log_every,
        val_check_interval=args.val_every,
        check_val_every_n_epoch=None if args.val_every else 1,
        limit_val_batches=None if val_clips else 0,
        default_root_dir=args.output_dir,
    )
    print(f"D4RT {config.name}: {module.model.num_parameters() / 1e6:.2f} M parameters, {len(train_clips)} training "
          f"clips, {len(val_clips)} validation clips, precision {precision}")
    trainer.fit(module, datamodule=data, ckpt_path=args.resume)
    if trainer.is_global_zero:
        out = save_weights(module.model.cpu().float().eval(), args.output_dir / "pretrained",
                           torch.float16 if args.save_dtype == "float16" else None)
        print(f"weights -> {out} (load with D4RT.from_pretrained)")
    return 0
