"""Lightning training: a short fit lowers the loss, the schedule and optimiser are the paper's, `d4rt train` runs
end to end (tiny, small sizes, auxiliary losses on) and resumes, its checkpoints convert to the save_pretrained
format, and bad arguments are refused in one line before any work."""

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
from d4rt.checkpoint import load_pretrained
from d4rt.cli import main
from d4rt.training.fit import D4RTLightningModule, export_pretrained, warmup_cosine
from d4rt.training.options import TrainingClips, TrainOptions
from d4rt.training.losses import d4rt_losses

ROOT = Path(__file__).resolve().parents[1]


def small_config():
    return D4RTConfig.preset("tiny", image_size=32, num_frames=4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_clips")
    base = int(np.random.randint(100_000))  # module-scoped: drawn in the first test's seeded context
    print(f"scene seeds {base}, {base + 1}")
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
    """torch's SequentialLR(LinearLR, CosineAnnealingLR) against the schedule's formula written out by hand."""
    lr, min_lr, warmup, total = 1e-4, 1e-6, 10, 110
    opt = torch.optim.SGD([torch.nn.Parameter(torch.randn(2))], lr=lr)
    sched = warmup_cosine(opt, warmup, total, min_lr)
    seen = []
    for _ in range(total + 1):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()

    def expected(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    for step, value in enumerate(seen):
        assert value == pytest.approx(expected(step), rel=1e-9, abs=1e-15), step
    assert seen[0] == pytest.approx(lr / warmup) and seen[warmup] == pytest.approx(lr) and seen[-1] == pytest.approx(min_lr)


def test_optimiser_groups_and_schedule():
    module = D4RTLightningModule(small_config().to_dict(), total_steps=100, warmup_steps=5, token_depth_weight=1.0)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and sched["interval"] == "step"
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.03 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    head = sum(p.numel() for p in module.token_depth_head.parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == module.model.num_parameters() + head
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 / 5)  # first warm-up step


def test_train_command_end_to_end(tmp_path):
    """`d4rt train` with both auxiliary losses: logs them, resumes, and the weights it writes are the model's
    alone (the training-only head is not in them) and equal the Lightning checkpoint's."""
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--image-size", "32", "--num-frames", "4", "--synthetic", "2",
            "--max-steps", "3", "--batch-size", "1", "--num-queries", "64", "--output-dir", str(out), "--val-every",
            "2", "--log-every", "1", "--ckpt-every", "3", "--accelerator", "cpu", "--save-dtype", "float16",
            "--max-minutes", "30", "--token-depth-weight", "1", "--own-token-weight", "0.1", "--depth-fraction",
            "0.3", "--warmup-steps", "1", "--own-token-init"]
    assert main(argv) == 0
    model = load_pretrained(out / "pretrained", dtype=None)  # as stored
    assert model.config.image_size == 32 and next(model.parameters()).dtype == torch.float16
    log = (out / "logs" / "version_0" / "metrics.csv").read_text()
    for column in ("train/loss", "val/loss", "train/token_depth", "train/own_token"):
        assert column in log, column
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("token_depth_head.") for k in ckpt["state_dict"])
    exported = D4RT.from_pretrained(export_pretrained(out / "checkpoints" / "last.ckpt", tmp_path / "exported"))
    assert set(exported.state_dict()) == set(model.state_dict())
    for k, v in exported.state_dict().items():
        torch.testing.assert_close(v.half(), model.state_dict()[k], rtol=0, atol=0)
    # resume: two more steps from the checkpoint
    resumed = argv[: argv.index("--max-steps") + 1] + ["5"] + argv[argv.index("--max-steps") + 2:]
    assert main(resumed + ["--resume", str(out / "checkpoints" / "last.ckpt")]) == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 5


@pytest.mark.parametrize("flags,message", [
    (["--synthetic", "2", "--lr", "-1"], "lr must be >= 0"),
    (["--synthetic", "2", "--lr", "1e-6", "--min-lr", "1e-4"], "need 0 < min_lr <= lr"),
    (["--synthetic", "2", "--depth-fraction", "1.5"], "depth_fraction must be in [0, 1]"),
    (["--synthetic", "2", "--max-steps", "0"], "max_steps must be a positive number"),
    (["--synthetic", "2", "--precision", "fp8"], "precision 'fp8' is not one of"),
    (["--synthetic", "2", "--preset", "huge"], "--preset 'huge' is not one of"),
    ([], "give --train-data-path"),
    (["--train-data-path", "/nonexistent/clips"], "--train-data-path /nonexistent/clips does not exist"),
    (["--synthetic", "2", "--resume", "/nonexistent.ckpt"], "--resume /nonexistent.ckpt does not exist"),
])
def test_train_command_refuses_bad_arguments(tmp_path, capsys, flags, message):
    """Checked before anything is generated or loaded: one line, exit 2, nothing written."""
    out = tmp_path / "run"
    assert main(["train", "--output-dir", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_train_command_argparse_errors(tmp_path, capsys):
    """A snake_case alias reaches the kebab-case flag; an out-of-range integer is an argparse error (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(["train", "--output-dir", str(tmp_path / "run"), "--synthetic", "2", "--batch_size", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--batch-size" in err and "Traceback" not in err


def test_train_options_refuse_bad_values():
    with pytest.raises(ValueError, match="num_queries must be >= 1"):
        TrainOptions(num_queries=0)
    with pytest.raises(ValueError, match="save_dtype 'int8'"):
        TrainOptions(save_dtype="int8")
    with pytest.raises(ValueError, match="TrainingClips.train is empty"):
        TrainingClips([])


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Lightning checkpoint"):
        export_pretrained(tmp_path / "none.ckpt", tmp_path / "out")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a D4RTLightningModule"):
        export_pretrained(tmp_path / "other.ckpt", tmp_path / "out")


@pytest.mark.parametrize("script,flags", [
    ("train_d4rt.py", ["--train-data-path", "--val-data-path", "--num-queries", "--image-size", "--batch-size", "--lr",
                       "--weight-decay", "--max-epochs", "--devices", "--preset", "--synthetic", "--max-steps",
                       "--token-depth-weight", "--own-token-weight", "--depth-fraction"]),
    ("evaluate_d4rt.py", ["--test-data", "--ckpt", "--synthetic", "--format"]),
])
def test_script_help(script, flags):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in flags:
        assert flag in out, flag
