"""bf16 training against fp32: steps/s and the loss curve, through the real training path (``fit`` =
``d4rt train --precision bf16``: Lightning's "bf16-mixed", float32 weights and AdamW state, forward under
``torch.autocast(bfloat16)``), on the CPU or a GPU; and a torch.profiler breakdown of one step.

Each (preset, precision) run trains the same seeded model on the same synthetic clips and queries for ``--steps``
steps; the step time is Lightning's batch (forward + backward + clip + AdamW step, data loading excluded), median
after ``--warmup`` steps. The loss curves are compared as the mean |bf16 - fp32| of their moving averages (window
``--smooth``) against the fp32 curve's own step-to-step noise (the std of its residual around that average).

    # the lead, on a quiet machine (timings):
    python benchmarks/train_precision.py --presets tiny base --steps 300 --profile
    # smoke (seconds; the numbers mean nothing):
    python benchmarks/train_precision.py --presets tiny --steps 6 --warmup 2 --image-size 64 --frames 4 \\
        --queries 64 --batch-size 1 --clips 2 --smooth 2 --profile --out /tmp/train_precision.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
# torch.profiler op name -> where the time goes (first match wins; the rest is "other")
CATEGORIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
                "aten::_addmm_activation", "mkldnn", "aten::_mkldnn", "onednn")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "aten::_softmax",
                   "aten::softmax", "_softmax_backward")),
    ("conv (patch embed)", ("conv", "convolution")),
    ("layernorm", ("layer_norm",)),
    ("dtype casts", ("aten::to", "aten::_to_copy", "aten::copy_")),
    ("gelu / elementwise", ("gelu", "aten::add", "aten::mul", "aten::sub", "aten::div", "aten::where", "aten::neg",
                            "aten::exp", "aten::sin", "aten::cos", "aten::sigmoid", "aten::abs", "aten::pow",
                            "aten::sqrt", "aten::rsqrt", "aten::clamp", "aten::fill_", "aten::zero_")),
    ("optimizer (AdamW)", ("_foreach", "adamw", "Optimizer.step", "_fused_adam")),
    ("gather / sampling", ("grid_sampler", "gather", "index", "scatter", "aten::take")),
    ("reductions", ("aten::sum", "aten::mean", "aten::norm", "linalg_vector_norm", "aten::max", "aten::min")),
    ("layout (view/copy/cat)", ("aten::cat", "aten::stack", "aten::clone", "aten::contiguous", "aten::transpose",
                                "aten::permute", "aten::reshape", "aten::view", "aten::expand", "aten::empty",
                                "aten::slice", "aten::select", "aten::unbind", "aten::split", "aten::chunk")),
)


def make_step_timer(device: str):
    """A Lightning callback recording the wall time and loss of every training batch (forward, backward, optimiser
    step; data loading excluded): ``.times`` (s), ``.losses``."""
    import lightning as L
    import torch

    class StepTimer(L.Callback):
        def __init__(self):
            self.times, self.losses, self._start = [], [], 0.0

        def _sync(self):
            if device == "cuda":
                torch.cuda.synchronize()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self._sync()
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self._sync()
            self.times.append(time.perf_counter() - self._start)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss.detach().float()))

    return StepTimer()


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(x)))
    return np.convolve(x, np.ones(window) / window, mode="valid")


def compare_curves(fp32: list[float], bf16: list[float], window: int) -> dict:
    """Mean |bf16 - fp32| of the moving averages, the fp32 curve's step noise, and their ratio (<= ~1: within noise)."""
    a, b = np.asarray(fp32), np.asarray(bf16)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ma, mb = moving_average(a, window), moving_average(b, window)
    offset = (len(a) - len(ma)) // 2
    noise = float(np.std(a[offset:offset + len(ma)] - ma)) if len(ma) else float("nan")
    gap = float(np.mean(np.abs(mb - ma))) if len(ma) else float("nan")
    tail = max(1, n // 10)
    return {"steps": n, "window": window, "mean_abs_gap": gap, "fp32_step_noise": noise,
            "gap_over_noise": gap / noise if noise > 0 else float("nan"),
            "final_loss_fp32": float(a[-tail:].mean()), "final_loss_bf16": float(b[-tail:].mean())}


def categorize(name: str) -> str:
    low = name.lower()
    for category, keys in CATEGORIES:
        if any(k.lower() in low for k in keys):
            return category
    return "other"


def profile_step(config, clips, batch_size: int, queries: int, device: str, steps: int = 3) -> dict:
    """torch.profiler over ``steps`` training steps (after one warm-up) in fp32 and in bf16 autocast: self CPU (or
    CUDA) time per category, op counts, and the matmul rate's share. The step is what Lightning runs: forward +
    losses under autocast, backward, AdamW."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from d4rt.data.dataset import D4RTDataset
    from d4rt.training.fit import D4RTLightningModule
    from d4rt.training.losses import d4rt_losses

    dataset = D4RTDataset(clips, config.num_frames, config.image_size, num_queries=queries, fixed_queries=True,
                          cache=True)
    items = [dataset[i % len(dataset)] for i in range(batch_size)]
    batch = {k: torch.stack([it[k] for it in items]).to(device) if torch.is_tensor(items[0][k]) else items[0][k]
             for k in items[0]}
    result = {}
    for precision in PRECISIONS:
        torch.manual_seed(0)
        module = D4RTLightningModule(config.to_dict(), warmup_steps=0, total_steps=10).to(device).train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

        def step():
            with record_function("phase: forward + losses"), \
                    torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                pred = module(batch)
                loss = d4rt_losses(pred, batch, module.loss_weights)["loss"]
            with record_function("phase: backward"):
                loss.backward()
            with record_function("phase: clip + AdamW"):
                torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        step()  # warm-up (oneDNN primitive caches, allocator)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps
        attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        totals, counts = {}, {}
        total_attr = "device_time_total" if device == "cuda" else "cpu_time_total"
        phases = {e.key.removeprefix("phase: "): float(getattr(e, total_attr)) / steps / 1e3
                  for e in prof.key_averages() if e.key.startswith("phase: ")}  # inclusive ms per step
        for event in prof.key_averages():
            if event.key.startswith("phase: "):
                continue
            t = float(getattr(event, attr, 0.0) or 0.0) / steps / 1e3  # ms per step
            c = categorize(event.key)
            totals[c] = totals.get(c, 0.0) + t
            counts[c] = counts.get(c, 0) + event.count // steps
        profiled = sum(totals.values())
        result[precision] = {
            "step_ms_wall": 1e3 * wall,
            "profiled_ms": profiled,
            "phases_ms": phases,
            "categories": {c: {"ms": totals[c], "share": totals[c] / profiled if profiled else 0.0,
                               "ops_per_step": counts[c]} for c in sorted(totals, key=totals.get, reverse=True)},
            "top_ops": [(e.key, float(getattr(e, attr, 0.0)) / steps / 1e3, e.count // steps)
                        for e in sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0.0), reverse=True)[:15]],
        }
    fp32, bf16 = result["fp32"]["categories"], result["bf16"]["categories"]
    result["speedup_by_category"] = {c: fp32[c]["ms"] / bf16[c]["ms"] for c in fp32 if c in bf16 and bf16[c]["ms"] > 0}
    result["speedup_step"] = result["fp32"]["step_ms_wall"] / result["bf16"]["step_ms_wall"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "base"])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--steps", type=int, default=300, help="training steps per run (0: no runs, only --profile)")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--frames", type=int, default=None, help="override the presets' frames (smoke runs)")
    p.add_argument("--image-size", type=int, default=None, help="override the presets' S (smoke runs)")
    p.add_argument("--clips", type=int, default=16, help="synthetic training clips (rendered once per T / S)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--smooth", type=int, default=20, help="moving-average window of the loss-curve comparison")
    p.add_argument("--accelerator", default="auto", help="cpu | gpu | auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--curves-only", action="store_true",
                   help="leave the timings out of the results (loss curves measured on a busy machine)")
    p.add_argument("--profile", action="store_true", help="also profile tiny steps (fp32 vs bf16) with torch.profiler")
    p.add_argument("--data", default=None, help="folder for the rendered clips (default: a temporary one)")
    p.add_argument("--out", default=None,
                   help="results .json (default benchmarks/results/<date>-<device>-train-precision.json)")
    args = p.parse_args(argv)

    import torch

    from d4rt.benchmarking import RowWriter, format_number, run_record
    from d4rt.config import D4RTConfig
    from d4rt.data.synthetic import TRAIN_SEED_BASE, generate_clips
    from d4rt.training.fit import fit
    from d4rt.training.options import TrainingClips, TrainOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.accelerator in ("gpu", "cuda") or (args.accelerator == "auto" and torch.cuda.is_available())
    device = "cuda" if on_gpu else "cpu"
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    env = run_record()
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    env.update(load_average=" ".join(load), torch_threads=torch.get_num_threads(),
               cpu_flags=sorted(f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni")
                                if f in cpuinfo))
    tag = "cuda" if on_gpu else "cpu"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        f"{dt.date.today().isoformat()}-{tag}-train-precision.json")
    writer = RowWriter(
        out, env, ["preset", "precision", "steps", "ms / step", "steps / s", "speed-up", "final loss",
                   "gap / noise"],
        lambda r: [r["preset"], r["precision"], r["steps"], format_number(r.get("ms_per_step")),
                   format_number(r.get("steps_per_s")), format_number(r.get("speedup")),
                   format_number(r["final_loss"], 4),
                   format_number(r.get("curve", {}).get("gap_over_noise"))],
        title=f"bf16 vs fp32 training ({tag})",
        notes=(f"fit() / `d4rt train --precision bf16` (Lightning bf16-mixed), batch {args.batch_size} x "
               f"{args.queries} queries, lr {args.lr}, {args.clips} synthetic clips; step = forward + backward + "
               f"AdamW (data loading excluded), median after {args.warmup} steps. gap / noise: mean |bf16 - fp32| of "
               f"the {args.smooth}-step moving averages over the fp32 curve's step noise (<= ~1: the same curve "
               f"within noise). Load average at start: {' '.join(load)}."),
        settings=vars(args),
    )
    work = Path(args.data or tempfile.mkdtemp(prefix="d4rt-train-precision-"))
    clip_sets = {}
    for preset in args.presets if args.steps > 0 else []:
        config = D4RTConfig.preset(preset, **{k: v for k, v in (("num_frames", args.frames),
                                                                  ("image_size", args.image_size)) if v})
        key = (config.num_frames, config.image_size)
        if key not in clip_sets:
            clip_sets[key] = generate_clips(work / f"T{key[0]}-S{key[1]}", range(TRAIN_SEED_BASE,
                                            TRAIN_SEED_BASE + args.clips), *key, progress=False)
        clips = TrainingClips(clip_sets[key])
        rows, fp32_ms = {}, None
        for name in args.precisions:
            timer = make_step_timer(device)
            options = TrainOptions(
                output_dir=work / f"run-{preset}-{name}", num_queries=args.queries, batch_size=args.batch_size,
                lr=args.lr, warmup_steps=min(50, args.steps // 5), confidence_warmup_steps=min(50, args.steps // 5),
                max_steps=args.steps, accelerator=args.accelerator, devices=1, precision=name, log_every=10**6,
                seed=0,
            )
            fit(config, clips, options, callbacks=[timer])
            times = np.asarray(timer.times[args.warmup:] or timer.times)
            ms = 1e3 * float(np.median(times))  # (a row may drop it: --curves-only)
            tail = max(1, len(timer.losses) // 10)
            row = {"preset": preset, "precision": name, "lightning_precision": PRECISIONS[name],
                   "steps": len(timer.losses), "ms_per_step": ms, "steps_per_s": 1e3 / ms,
                   "final_loss": float(np.mean(timer.losses[-tail:])), "loss_curve": timer.losses,
                   "step_ms": [1e3 * t for t in timer.times], "frames": config.num_frames,
                   "image_size": config.image_size}
            rows[name] = row
            if name == "fp32":
                fp32_ms = ms
            if name == "bf16" and fp32_ms is not None:
                row["speedup"] = fp32_ms / ms
                row["curve"] = compare_curves(rows["fp32"]["loss_curve"], timer.losses, args.smooth)
            if args.curves_only:  # a busy machine's timings are not results
                for key in ("ms_per_step", "steps_per_s", "speedup", "step_ms"):
                    row.pop(key, None)
            writer.add(row)
    if args.profile:
        config = D4RTConfig.preset("tiny", **{k: v for k, v in (("num_frames", args.frames),
                                                                  ("image_size", args.image_size)) if v})
        key = (config.num_frames, config.image_size)
        if key not in clip_sets:
            clip_sets[key] = generate_clips(work / f"T{key[0]}-S{key[1]}", range(TRAIN_SEED_BASE,
                                            TRAIN_SEED_BASE + args.clips), *key, progress=False)
        prof = profile_step(config, clip_sets[key], args.batch_size, args.queries, device)
        writer.info["profile_tiny"] = prof
        writer.flush()
        print(f"\nprofile of a tiny step ({device}; batch {args.batch_size} x {args.queries} queries, "
              f"{config.num_frames} x {config.image_size}^2): step fp32 {prof['fp32']['step_ms_wall']:.1f} ms, bf16 "
              f"{prof['bf16']['step_ms_wall']:.1f} ms ({prof['speedup_step']:.2f}x)")
        print(f"{'category':26s} {'fp32 ms':>9s} {'share':>6s} {'bf16 ms':>9s} {'share':>6s} {'x':>5s} {'ops':>5s}")
        for phase, ms in prof["fp32"]["phases_ms"].items():
            b = prof["bf16"]["phases_ms"].get(phase, float("nan"))
            print(f"{'[' + phase + ']':26s} {ms:9.1f} {ms / prof['fp32']['step_ms_wall']:6.1%} {b:9.1f} "
                  f"{b / prof['bf16']['step_ms_wall']:6.1%} {ms / b:5.2f}")
        for c, v in prof["fp32"]["categories"].items():
            b = prof["bf16"]["categories"].get(c, {"ms": 0.0, "share": 0.0, "ops_per_step": 0})
            print(f"{c:26s} {v['ms']:9.1f} {v['share']:6.1%} {b['ms']:9.1f} {b['share']:6.1%} "
                  f"{prof['speedup_by_category'].get(c, float('nan')):5.2f} {b['ops_per_step']:5d}")
    path = writer.close()
    print(writer.markdown())
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
