"""Lightning training and evaluation: a short fit lowers the loss, the schedule and optimiser are the paper's,
both scripts run end to end (tiny, small sizes) and their checkpoints convert to the save_pretrained format."""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from d4rt import D4RT, D4RTConfig
from d4rt.data.dataset import D4RTDataset
from d4rt.data.synthetic import Room, write_clip
from d4rt.training.fit import D4RTLightningModule, WarmupCosine, export_pretrained
from d4rt.training.losses import d4rt_losses

ROOT = Path(__file__).resolve().parents[1]


def small_config():
    return D4RTConfig.preset("tiny", image_size=32, num_frames=4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_clips")
    base = int(np.random.SeedSequence().entropy % 100_000)
    return [write_clip(root / f"c{i}.npz", Room.random(base + i, num_frames=4).render_clip(32, 32)) for i in range(2)]


def test_twenty_steps_lower_the_loss(clips):
    L.seed_everything(int(np.random.randint(2**31)))
    module = D4RTLightningModule(small_config().to_dict(), lr=1e-3, warmup_steps=2, total_steps=20,
                                 confidence_warmup_steps=0)
    train = D4RTDataset(clips, num_frames=4, image_size=32, num_queries=256)
    held_out = default_collate([D4RTDataset(clips, 4, 32, 256, seed=7, fixed_queries=True)[i] for i in range(2)])

    def loss():
        with torch.no_grad():
            return float(d4rt_losses(module(held_out), held_out)["loss"])

    before = loss()
    trainer = L.Trainer(accelerator="cpu", max_steps=20, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=10.0)
    trainer.fit(module, DataLoader(train, batch_size=2, shuffle=True))
    after = loss()
    assert trainer.global_step == 20
    assert after < 0.8 * before, (before, after)


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup_steps=10, total_steps=110, lr=1e-4, min_lr=1e-6)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half way down the cosine
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)  # ends at min_lr / lr
    assert all(f(s) >= f(s + 1) - 1e-12 for s in range(10, 120))


def test_optimiser_groups_and_schedule():
    module = D4RTLightningModule(small_config().to_dict(), total_steps=100, warmup_steps=5)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and sched["interval"] == "step"
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.03 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == module.model.num_parameters()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 / 5)  # first warm-up step


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_scripts_end_to_end(tmp_path):
    from d4rt import command_evaluate, command_train
    from d4rt.evaluation.evaluate import evaluate
    from d4rt.training.fit import fit

    out = tmp_path / "run"
    args = parse(command_train, [
        "--preset", "tiny", "--img_size", "32", "--num_frames", "4", "--synthetic", "2", "--max_steps", "3",
        "--batch_size", "1", "--num_queries", "64", "--output_dir", str(out), "--val_every", "2", "--log_every", "1",
        "--ckpt_every", "3", "--accelerator", "cpu", "--save_dtype", "float16", "--max_minutes", "30",
    ])
    assert fit(args) == 0
    model = D4RT.from_pretrained(out / "pretrained")
    assert model.config.image_size == 32 and next(model.parameters()).dtype == torch.float16
    log = (out / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in log and "val/loss" in log
    exported = D4RT.from_pretrained(export_pretrained(out / "checkpoints" / "last.ckpt", tmp_path / "exported"))
    for k, v in exported.state_dict().items():
        torch.testing.assert_close(v.half(), model.state_dict()[k], rtol=0, atol=0)

    report = tmp_path / "eval.json"
    args = parse(command_evaluate, [
        "--test_data_path", str(tmp_path / "test"), "--synthetic", "1", "--ckpt", str(out / "pretrained"),
        "--num_queries", "64", "--track_points", "16", "--accelerator", "cpu", "--devices", "1",
        "--output", str(report),
    ])
    assert evaluate(args) == 0
    result = json.loads(report.read_text())
    expected = {"depth_abs_rel", "depth_delta_1.25", "depth_abs_rel_best_constant", "epe_3d", "visibility_acc",
                "apd3d", "pose_ate"}
    assert set(result["mean"]) == expected and len(result["per_clip"]) == 1
    assert all(math.isfinite(v) for v in result["mean"].values())


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Lightning checkpoint"):
        export_pretrained(tmp_path / "none.ckpt", tmp_path / "out")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a D4RTLightningModule"):
        export_pretrained(tmp_path / "other.ckpt", tmp_path / "out")


@pytest.mark.parametrize("script,flags", [
    ("train_d4rt.py", ["--train_data_path", "--val_data_path", "--num_queries", "--img_size", "--batch_size", "--lr",
                       "--weight_decay", "--max_epochs", "--devices", "--preset", "--synthetic", "--max_steps"]),
    ("test_d4rt.py", ["--test_data_path", "--ckpt", "--synthetic", "--format"]),
])
def test_script_help(script, flags):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in flags:
        assert flag in out, flag
