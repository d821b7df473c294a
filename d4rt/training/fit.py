"""Training: the options, the LightningModule, its optimiser and schedule, and :func:`fit`.

- AdamW (betas 0.9 / 0.999), weight decay 0.03 on weight matrices only (biases, LayerNorms and the aspect-ratio
  input layer's 1-D parameters are not decayed).
- Learning rate: linear warm-up over ``warmup_steps`` to ``lr``, then cosine to ``min_lr`` at the last step
  (torch's ``SequentialLR(LinearLR, CosineAnnealingLR)``).
- Gradient clipping at norm 10; bf16 mixed precision on GPUs, float32 on the CPU unless ``precision="bf16"``.
- Training-only auxiliary losses (:mod:`d4rt.training.auxiliary`; off by default, the paper has none): per-token
  depth from the encoder memory, and the first decoder block's attention on the query's own token; and an
  initialisation of that head that finds the own token from the start (:mod:`d4rt.training.attention_init`).
  None changes the model's architecture or its exported graphs.
- Several GPUs or nodes: Lightning's DDP (``devices=8, strategy="ddp", num_nodes=2``); each process draws its
  own queries, the batch size is per device.
- Checkpoints: Lightning's ``.ckpt`` while training (resume with ``resume=``); at the end the weights are written
  in the save_pretrained format (``<output_dir>/pretrained``); :func:`export_pretrained` converts any ``.ckpt``.

    >>> config = D4RTConfig.preset("tiny", image_size=128)
    >>> clips = synthetic_clips("runs/tiny/data/train", "runs/tiny/data/val", 800, config)
    >>> fit(config, clips, TrainOptions(max_steps=3000, batch_size=4))
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from d4rt.config import D4RTConfig
from d4rt.data.synthetic import TRAIN_SEED_BASE, VAL_SEED_BASE
from d4rt.models import D4RT
from d4rt.training.auxiliary import TokenDepthHead, own_token_attention_loss, own_token_index, token_depth_loss
from d4rt.training.losses import LossWeights, d4rt_losses
from d4rt.training.options import TrainingClips, TrainOptions

SAVE_DTYPES = {"float32": None, "float16": torch.float16}
OWN_TOKEN_INIT_CLIPS = 8  # training clips the own-token head's read-outs are fitted on


def own_token_init(model: D4RT, clip_paths: list[Path]) -> dict[str, float]:
    """:func:`d4rt.training.attention_init.init_own_token_head` (decoder block 0, head 0) fitted on these clips."""
    from d4rt.data.dataset import D4RTDataset
    from d4rt.training.attention_init import init_own_token_head

    cfg = model.config
    dataset = D4RTDataset(clip_paths, cfg.num_frames, cfg.image_size, num_queries=1, fixed_queries=True, cache=False)
    videos = [dataset[i]["video"][None] for i in range(len(dataset))]
    was_training = model.training
    result = init_own_token_head(model.eval(), videos)
    model.train(was_training)
    return result


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr: float):
    """Linear warm-up from lr / warmup_steps to lr over ``warmup_steps`` steps, then cosine from lr to ``min_lr``
    at ``total_steps``: ``SequentialLR(LinearLR, CosineAnnealingLR)``, stepped once per optimiser step."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    cosine = CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup_steps, 1), eta_min=min_lr)
    if warmup_steps <= 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


class D4RTLightningModule(L.LightningModule):
    """D4RT + the paper's losses (+ the optional auxiliary ones). Batches are
    :class:`d4rt.data.dataset.D4RTDataset` items, stacked."""

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
        token_depth_weight: float = 0.0,
        own_token_weight: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()  # plain types only: Lightning checkpoints then load with weights_only=True
        self.model = D4RT(D4RTConfig.from_dict(config))
        self.loss_weights = LossWeights(**(loss_weights or {}))
        cfg = self.model.config
        # training only: not part of self.model, so save_pretrained / export never see it
        self.token_depth_head = TokenDepthHead(cfg.dec_dim, cfg.tubelet) if token_depth_weight > 0 else None

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(
            batch["video"], batch["coords_uv"], batch["t_src"], batch["t_tgt"], batch["t_cam"], batch["aspect_ratio"]
        )

    def forward_with_auxiliary(self, batch: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
        """The model's outputs and the auxiliary loss terms (empty when both weights are 0)."""
        hp = self.hparams
        if not (hp.token_depth_weight > 0 or hp.own_token_weight > 0):
            return self(batch), {}
        m, video = self.model, batch["video"]
        memory = m.encode(video, batch["aspect_ratio"])
        keys, values = m.memory_kv(memory)
        x = m.query_embedder(video, batch["coords_uv"], batch["t_src"], batch["t_tgt"], batch["t_cam"])
        pred = m.heads(m.decoder(x, keys, values))
        aux = {}
        if hp.token_depth_weight > 0:
            aux["token_depth"] = token_depth_loss(self.token_depth_head(memory), batch["depth_maps"], m.config.tubelet)
        if hp.own_token_weight > 0:
            own = own_token_index(batch["coords_uv"], batch["t_src"], m.config.image_size, m.config.tubelet)
            aux["own_token"] = own_token_attention_loss(m, x, keys, own)
        return pred, aux

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hold = self.global_step < self.hparams.confidence_warmup_steps
        pred, aux = self.forward_with_auxiliary(batch)
        terms = d4rt_losses(pred, batch, self.loss_weights, hold_confidence=hold)
        loss = terms["loss"]
        if "token_depth" in aux:
            loss = loss + self.hparams.token_depth_weight * aux["token_depth"]
        if "own_token" in aux:
            loss = loss + self.hparams.own_token_weight * aux["own_token"]
        B = batch["video"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": v for k, v in {**terms, **aux}.items() if k != "loss"}, batch_size=B)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch)
        terms = d4rt_losses(pred, batch, self.loss_weights, hold_confidence=False)
        B = batch["video"].shape[0]
        self.log("val/loss", terms["loss"], prog_bar=True, batch_size=B, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=B, sync_dist=True)
        vis_ok = ((pred["visibility"] > 0) == (batch["gt_visibility"] > 0.5)).float()
        self.log("val/visibility_acc", vis_ok[batch["valid"]].mean(), batch_size=B, sync_dist=True)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        total = self.hparams.total_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = warmup_cosine(optimizer, self.hparams.warmup_steps, total, self.hparams.min_lr)
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
# a run
# ----------------------------------------------------------------------------------------------------------------
def synthetic_clips(train_dir: str | Path, val_dir: str | Path, count: int, config: D4RTConfig,
                    workers: int = 1) -> TrainingClips:
    """Render ``count`` synthetic training clips (seeds TRAIN_SEED_BASE + i) into ``train_dir`` and count / 10
    (2 to 20) validation clips (seeds VAL_SEED_BASE + i) into ``val_dir``, at the config's frames and size (clips
    already there are kept), and return exactly those clips."""
    from d4rt.data.synthetic import generate_clips

    if count < 1:
        raise ValueError(f"count must be >= 1 synthetic clip, got {count}")
    T, S, workers = config.num_frames, config.image_size, max(1, workers)
    train = generate_clips(train_dir, range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + count), T, S, workers=workers)
    num_val = max(2, min(20, count // 10))
    val = generate_clips(val_dir, range(VAL_SEED_BASE, VAL_SEED_BASE + num_val), T, S, workers=workers)
    return TrainingClips(train, val)


def fit(config: D4RTConfig, clips: TrainingClips, options: TrainOptions = TrainOptions(),
        callbacks: list | None = None) -> Path:
    """Train ``config``'s model on ``clips``; returns the save_pretrained directory (``output_dir/pretrained``).

    ``options.precision`` "bf16" (Lightning's "bf16-mixed") trains with float32 weights and optimiser state and runs
    the forward pass under ``torch.autocast(bfloat16)``, on the CPU (AMX / AVX-512 BF16) as on GPUs.
    ``callbacks``: extra Lightning callbacks (benchmarks/train_precision.py times steps with one).

    Logs (CSV, every ``log_every`` steps) go to ``output_dir/logs``, Lightning checkpoints to
    ``output_dir/checkpoints/last.ckpt``.
    """
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from d4rt.data.datamodule import D4RTDataModule

    o = options
    L.seed_everything(o.seed, workers=True)
    data = D4RTDataModule(
        clips.train, clips.val, config.num_frames, config.image_size, o.num_queries, o.batch_size, o.num_workers,
        o.seed, depth_fraction=o.depth_fraction,
    )
    module = D4RTLightningModule(
        config.to_dict(), lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay, warmup_steps=o.warmup_steps,
        total_steps=o.max_steps if o.max_steps > 0 else None, confidence_warmup_steps=o.confidence_warmup_steps,
        token_depth_weight=o.token_depth_weight, own_token_weight=o.own_token_weight,
    )
    if o.init is not None:
        module.model.load_state_dict(D4RT.from_pretrained(o.init).float().state_dict())
    if o.own_token_init and o.resume is None:
        print("own-token head initialised:", own_token_init(module.model, clips.train[:OWN_TOKEN_INIT_CLIPS]))
    on_gpu = o.accelerator in ("gpu", "cuda") or (o.accelerator == "auto" and torch.cuda.is_available())
    precision = o.precision or ("bf16-mixed" if on_gpu else "32-true")
    trainer = L.Trainer(
        accelerator=o.accelerator,
        devices=o.devices,
        num_nodes=o.num_nodes,
        strategy=o.strategy,
        precision=precision,
        max_epochs=o.max_epochs if o.max_epochs is not None else (None if o.max_steps > 0 else 1),
        max_steps=o.max_steps,
        max_time=None if o.max_minutes is None else {"seconds": round(60 * o.max_minutes)},
        gradient_clip_val=10.0,
        gradient_clip_algorithm="norm",
        logger=CSVLogger(o.output_dir, name="logs"),
        callbacks=[
            ModelCheckpoint(
                dirpath=o.output_dir / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=o.ckpt_every,
            ),
            LearningRateMonitor(logging_interval="step"),
            *(callbacks or []),
        ],
        log_every_n_steps=o.log_every,
        val_check_interval=o.val_every,
        check_val_every_n_epoch=None if o.val_every else 1,
        limit_val_batches=None if clips.val else 0,
        default_root_dir=o.output_dir,
    )
    print(f"D4RT {config.name}: {module.model.num_parameters() / 1e6:.2f} M parameters, {len(clips.train)} training "
          f"clips, {len(clips.val)} validation clips, precision {precision}")
    trainer.fit(module, datamodule=data, ckpt_path=o.resume)
    out = o.output_dir / "pretrained"
    if trainer.is_global_zero:
        save_weights(module.model.cpu().float().eval(), out, SAVE_DTYPES[o.save_dtype])
        print(f"weights -> {out} (load with D4RT.from_pretrained)")
    return out
