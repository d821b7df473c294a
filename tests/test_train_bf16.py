"""bf16 training (``d4rt train --precision bf16`` / ``fit`` with ``TrainOptions(precision="bf16")``): Lightning's
bf16-mixed on the CPU: the matmuls run in bfloat16 under autocast, weights stay float32, and the loss of a step
agrees with float32's to bfloat16's rounding; plus the benchmark script's curve comparison."""

import lightning as L
import numpy as np
import pytest
import torch

from d4rt import D4RTConfig
from d4rt.data.synthetic import Room, write_clip
from d4rt.training.fit import fit
from d4rt.training.options import TrainingClips, TrainOptions


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16_clips")
    seed = int(np.random.randint(100_000))  # module-scoped: drawn in the first test's seeded context
    print(f"scene seed {seed}")
    return TrainingClips([write_clip(root / "c0.npz", Room.random(seed, num_frames=4).render_clip(32, 32))])


def test_precision_names():
    assert TrainOptions(precision="bf16").precision == "bf16-mixed"
    assert TrainOptions(precision="fp32").precision == "32-true"
    assert TrainOptions(precision="bf16-mixed").precision == "bf16-mixed"
    with pytest.raises(ValueError, match=r"precision 'fp8' is not one of \('fp32', 'bf16'"):
        TrainOptions(precision="fp8")


class Probe(L.Callback):
    """Records the dtype of the first decoder projection's output and the weights' dtype during training, and
    the loss of every step."""

    def __init__(self):
        self.out_dtypes, self.weight_dtypes, self.losses, self.handle = set(), set(), [], None

    def on_train_start(self, trainer, module):
        linear = next(m for m in module.model.decoder.modules() if isinstance(m, torch.nn.Linear))
        self.handle = linear.register_forward_hook(lambda m, i, o: self.out_dtypes.add(o.dtype))
        self.weight_dtypes = {p.dtype for p in module.parameters()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))

    def on_train_end(self, trainer, module):
        self.handle.remove()
        self.weight_dtypes |= {p.dtype for p in module.parameters()}


def test_bf16_fit_runs_the_matmuls_in_bfloat16_and_matches_fp32(clips, tmp_path):
    config = D4RTConfig.preset("tiny", image_size=32, num_frames=4)
    probes = {}
    for precision in ("fp32", "bf16"):
        probes[precision] = Probe()
        options = TrainOptions(output_dir=tmp_path / precision, num_queries=64, batch_size=1, max_steps=1,
                               warmup_steps=1, accelerator="cpu", devices=1, precision=precision, seed=3)
        fit(config, clips, options, callbacks=[probes[precision]])
    assert probes["fp32"].out_dtypes == {torch.float32}
    assert probes["bf16"].out_dtypes == {torch.bfloat16}
    assert probes["bf16"].weight_dtypes == {torch.float32}  # mixed precision: float32 master weights
    # Same seed, same weights, same first batch: the first loss differs only by bfloat16 rounding (8-bit mantissa,
    # 2^-9 relative per rounding, accumulated over a few layers); a bf16 run that silently ran fp32 gives 0.
    a, b = probes["fp32"].losses[0], probes["bf16"].losses[0]
    assert 0 < abs(a - b) / abs(a) < 5e-2, (a, b)
    assert np.isfinite(probes["bf16"].losses).all()


def test_curve_comparison_tells_noise_from_a_gap():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_precision.py"
    spec = importlib.util.spec_from_file_location("train_precision", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(np.random.randint(2**31))
    steps = np.arange(300)
    base = 2.0 * np.exp(-steps / 100) + 0.5
    fp32 = base + 0.05 * rng.standard_normal(300)
    same = base + 0.05 * rng.standard_normal(300)  # another draw of the same curve
    worse = base + 0.2 + 0.05 * rng.standard_normal(300)  # a curve 4 noise-sigmas higher
    assert bench.compare_curves(fp32, same, 20)["gap_over_noise"] < 1.0
    assert bench.compare_curves(fp32, worse, 20)["gap_over_noise"] > 3.0
