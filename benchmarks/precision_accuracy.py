"""The accuracy budget table (docs/precision.md): each reduced precision against fp32 on the same queries.

For the bundled model (checkpoints/tiny-synthetic) on held-out synthetic clips (seeds 2,000,000+, as `d4rt
evaluate --synthetic`): the relative error of xyz against the fp32 model on the same random queries, and every
evaluation metric of d4rt.evaluation (depth AbsRel with per-frame and per-clip median scaling, APD3D and 3D-AJ
with median and per-trajectory scaling, pose ATE, ...) with its change relative to fp32. For base with seeded
random weights: the xyz error only (random weights have no meaningful metrics).

Precisions (each answers through the runtime's backend interface, exactly as a deployed model does):
  torch-fp32            the reference: the model in float32 on the torch backend (sdpa)
  torch-bf16            the model in bfloat16 (eager)
  torch-bf16-compiled   the same with the decoder under torch.compile
  ort-fp32              the fp32 export in ONNX Runtime CPU (the default deployment; should equal fp32)
  ort-int8              the int8 export (`d4rt export --precision int8`) in ONNX Runtime CPU
  ort-fp16              the fp16 export (TensorRT's graphs) in ONNX Runtime CPU, where it runs

Budgets (issue #23): xyz relative error bf16 <= 1.5e-2, int8 <= 3e-2 (fp16: 1e-2, the export's parity tolerance);
every judged metric within 2 % relative of fp32. A miss is printed and recorded, never dropped.

    python benchmarks/precision_accuracy.py --workdir /tmp/d4rt_precision            # 20 clips, tiny + base
    python benchmarks/precision_accuracy.py --clips 2 --skip-base --variants torch-bf16 ort-int8   # a smoke test

Writes benchmarks/results/<date>-precision-accuracy.json and .md, row by row (d4rt.benchmarking.RowWriter).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "checkpoints" / "tiny-synthetic"
VARIANTS = ("torch-bf16", "ort-int8", "ort-fp32", "ort-fp16", "torch-bf16-compiled")
XYZ_BUDGET = {"torch-bf16": 1.5e-2, "torch-bf16-compiled": 1.5e-2, "ort-int8": 3e-2, "ort-fp16": 1e-2,
              "ort-fp32": 1e-4}
METRIC_BUDGET = 0.02  # relative change of each judged metric
JUDGED = ("depth_abs_rel_frame_median", "depth_abs_rel_clip_median", "apd3d_median", "aj3d_median",
          "apd3d_per_trajectory", "aj3d_per_trajectory", "pose_ate")
XYZ_QUERIES = 4096  # random queries per clip for the xyz error


def relative_error(found: np.ndarray, reference: np.ndarray) -> float:
    f, r = np.asarray(found, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(f - r) / np.linalg.norm(r))


def export_dir(model, workdir: Path, precision: str, frames: int, checkpoint: Path) -> Path:
    """An export of ``model`` (made once, reused): fp32 / int8 with ONNX Runtime's attention, fp16 standard."""
    from d4rt.export import export_onnx

    out = workdir / f"{model.config.name}-{precision}-T{frames}"
    if not (out / "manifest.json").is_file():
        export_onnx(model, out, precision=precision, num_frames=frames, progress=False,
                    checkpoint={"path": str(checkpoint.resolve())})
    return out


def make_backend(variant: str, model, workdir: Path, frames: int, checkpoint: Path):
    """The runtime backend of ``variant`` for ``model`` (float32, eval)."""
    import copy

    import torch

    from d4rt.runtime.backend_onnxruntime import OnnxRuntimeBackend
    from d4rt.runtime.backend_torch import TorchBackend
    from d4rt.runtime.manifest import read_manifest

    if variant == "torch-fp32":
        return TorchBackend(model)
    if variant.startswith("torch-bf16"):
        return TorchBackend(copy.deepcopy(model).to(torch.bfloat16).eval(), variant,
                            compile_decoder=variant.endswith("compiled"))
    precision = variant.removeprefix("ort-")
    directory = export_dir(model, workdir, precision, frames, checkpoint)
    return OnnxRuntimeBackend(directory, read_manifest(directory), "cpu")


def xyz_outputs(model, backend, videos: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """xyz [XYZ_QUERIES, 3] of each clip (frames [T, S, S, 3] in [0, 1]) on seeded random queries."""
    from d4rt.evaluation.evaluate import model_runtime

    out = []
    for i, frames in enumerate(videos):
        T = frames.shape[0]
        rt = model_runtime(model, T, backend)
        rng = np.random.default_rng(seed + i)
        uv = rng.random((XYZ_QUERIES, 2), dtype=np.float32)
        t = rng.integers(0, T, (3, XYZ_QUERIES))
        out.append(rt.query(rt.encode(frames), uv, *t)["xyz"])
    return out


def clip_videos(paths: list[Path], num_frames: int, image_size: int) -> list[np.ndarray]:
    from d4rt.data.dataset import D4RTDataset

    dataset = D4RTDataset(paths, num_frames, image_size, 16, seed=2, fixed_queries=True)
    return [dataset[i]["video"].float().permute(0, 2, 3, 1).numpy() for i in range(len(paths))]


def judge(variant: str, xyz_error: float, metrics: dict | None, reference: dict | None) -> tuple[dict, list[str]]:
    """(relative change of each metric vs fp32, the misses as sentences)."""
    misses, changes = [], {}
    if xyz_error > XYZ_BUDGET[variant]:
        misses.append(f"xyz relative error {xyz_error:.2e} > budget {XYZ_BUDGET[variant]:.0e}")
    if metrics is not None and reference is not None:
        for k, v in metrics.items():
            ref = reference.get(k)
            if ref is None:
                continue
            changes[k] = (v - ref) / abs(ref) if ref else float(v != ref)
            if k in JUDGED and abs(changes[k]) > METRIC_BUDGET:
                misses.append(f"{k} {v:.4g} vs fp32 {ref:.4g} ({changes[k]:+.1%}, budget +-{METRIC_BUDGET:.0%})")
    return changes, misses


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--clips", type=int, default=20, help="held-out synthetic clips (the issue asks for >= 20)")
    p.add_argument("--skip-base", action="store_true", help="no base (random weights) rows")
    p.add_argument("--skip-tiny", action="store_true", help="no rows of the bundled model (base rows only)")
    p.add_argument("--base-frames", type=int, default=16, help="clip length of the base rows (M = T/2 * 256 + 1)")
    p.add_argument("--base-clips", type=int, default=2, help="clips of the base rows (xyz error only)")
    p.add_argument("--seed", type=int, default=0, help="of the xyz queries, the base weights, the evaluation")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/d4rt_precision"))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    args = p.parse_args()

    from d4rt.benchmarking import RowWriter, format_number, run_record

    args.workdir.mkdir(parents=True, exist_ok=True)
    header = ["model", "precision", "xyz rel. error", "budget", *JUDGED, "within budget"]

    def cells(r):
        m = r.get("metrics") or {}
        c = r.get("change_vs_fp32") or {}
        shown = [f"{m[k]:.4g} ({c[k]:+.1%})" if k in m and k in c else (f"{m[k]:.4g}" if k in m else "-")
                 for k in JUDGED]
        return [r["model"], r["precision"], format_number(r["xyz_rel_error"]), format_number(r["xyz_budget"]),
                *shown, "yes" if r["within_budget"] else "NO: " + "; ".join(r["misses"])]

    path = args.out / f"{time.strftime('%Y-%m-%d', time.gmtime())}-precision-accuracy{args.tag}.json"
    writer = RowWriter(path, run_record(device="CPU"), header, cells, title="Accuracy of reduced precision vs fp32",
                       notes=f"xyz: relative error vs the fp32 model on {XYZ_QUERIES} random queries per clip; "
                             f"metrics: d4rt.evaluation on the held-out clips (change vs fp32 in brackets); budgets: "
                             f"xyz {XYZ_BUDGET}, judged metrics within {METRIC_BUDGET:.0%} of fp32.",
                       clips=args.clips, seed=args.seed, judged_metrics=list(JUDGED))

    # ----- the bundled model on held-out clips ---------------------------------------------------------------------
    if not args.skip_tiny:
        bundled_rows(args, writer)
    if not args.skip_base:
        base_rows(args, writer)
    print(f"wrote {writer.close()}")
    return 0


def bundled_rows(args, writer) -> None:
    """The bundled model on held-out clips: xyz error and every metric, per precision."""
    from d4rt.checkpoint import load_pretrained
    from d4rt.data.synthetic import TEST_SEED_BASE, generate_clips
    from d4rt.evaluation.evaluate import EvalOptions, evaluate

    model = load_pretrained(BUNDLED).float().eval()
    cfg = model.config
    clips_dir = args.workdir / f"heldout-{cfg.num_frames}x{cfg.image_size}"
    paths = generate_clips(clips_dir, range(TEST_SEED_BASE, TEST_SEED_BASE + args.clips), cfg.num_frames,
                           cfg.image_size, progress=False)
    videos = clip_videos(paths, cfg.num_frames, cfg.image_size)
    options = EvalOptions(seed=args.seed)
    print(f"{len(paths)} held-out clips ({cfg.num_frames} x {cfg.image_size}^2) in {clips_dir}")

    reference_xyz = xyz_outputs(model, make_backend("torch-fp32", model, args.workdir, cfg.num_frames, BUNDLED),
                                videos, args.seed)
    reference = evaluate(model, paths, "clips", options)
    writer.add({"model": "tiny-synthetic", "precision": "torch-fp32", "xyz_rel_error": 0.0, "xyz_budget": None,
                "metrics": reference["mean"], "per_clip": reference["per_clip"], "within_budget": True,
                "misses": [], "reference": True})
    print("torch-fp32: " + ", ".join(f"{k} {reference['mean'][k]:.4g}" for k in JUDGED), flush=True)
    for variant in args.variants:
        try:
            backend = make_backend(variant, model, args.workdir, cfg.num_frames, BUNDLED)
            found = xyz_outputs(model, backend, videos, args.seed)
            report = evaluate(model, paths, "clips", options, backend=backend)
        except Exception as e:  # noqa: BLE001 - a precision that cannot run here is a row that says so
            row = {"model": "tiny-synthetic", "precision": variant, "xyz_rel_error": None,
                   "xyz_budget": XYZ_BUDGET[variant], "within_budget": False,
                   "misses": [f"does not run here: {type(e).__name__}: {str(e).splitlines()[0][:300]}"]}
            writer.add(row)
            print(f"{variant}: {row['misses'][0]}", flush=True)
            continue
        xyz_error = relative_error(np.concatenate(found), np.concatenate(reference_xyz))
        per_clip_xyz = [relative_error(f, r) for f, r in zip(found, reference_xyz)]
        changes, misses = judge(variant, xyz_error, report["mean"], reference["mean"])
        row = {"model": "tiny-synthetic", "precision": variant, "backend": getattr(backend, "name", variant),
               "compiled": getattr(backend, "compiled", None), "xyz_rel_error": xyz_error,
               "xyz_rel_error_worst_clip": max(per_clip_xyz), "xyz_budget": XYZ_BUDGET[variant],
               "metrics": report["mean"], "change_vs_fp32": changes, "per_clip": report["per_clip"],
               "within_budget": not misses, "misses": misses}
        writer.add(row)
        print(f"{variant}: xyz {xyz_error:.2e} (worst clip {max(per_clip_xyz):.2e}); "
              + ", ".join(f"{k} {changes[k]:+.2%}" for k in JUDGED if k in changes)
              + ("" if not misses else "  MISSES: " + "; ".join(misses)), flush=True)



def base_rows(args, writer) -> None:
    """base with seeded random weights: the xyz error per precision."""
    from d4rt.checkpoint import random_model
    from d4rt.data.synthetic import TEST_SEED_BASE, generate_clips

    base = random_model("base", args.seed)
    base_ckpt = args.workdir / "base-random" / "checkpoint"
    if not (base_ckpt / "config.json").is_file():
        base.save_pretrained(base_ckpt)
    bcfg = base.config
    base_paths = generate_clips(args.workdir / f"heldout-{args.base_frames}x{bcfg.image_size}",
                                range(TEST_SEED_BASE, TEST_SEED_BASE + args.base_clips), args.base_frames,
                                bcfg.image_size, progress=False)
    base_videos = clip_videos(base_paths, args.base_frames, bcfg.image_size)
    ref = xyz_outputs(base, make_backend("torch-fp32", base, args.workdir, args.base_frames, base_ckpt),
                      base_videos, args.seed)
    for variant in args.variants:
        try:
            backend = make_backend(variant, base, args.workdir, args.base_frames, base_ckpt)
            found = xyz_outputs(base, backend, base_videos, args.seed)
        except Exception as e:  # noqa: BLE001
            writer.add({"model": "base (random weights)", "precision": variant, "xyz_rel_error": None,
                        "xyz_budget": XYZ_BUDGET[variant], "within_budget": False,
                        "misses": [f"does not run here: {type(e).__name__}: {str(e).splitlines()[0][:300]}"]})
            continue
        xyz_error = relative_error(np.concatenate(found), np.concatenate(ref))
        _, misses = judge(variant, xyz_error, None, None)
        writer.add({"model": "base (random weights)", "precision": variant,
                    "backend": getattr(backend, "name", variant), "xyz_rel_error": xyz_error,
                    "xyz_budget": XYZ_BUDGET[variant], "within_budget": not misses, "misses": misses})
        print(f"base {variant}: xyz {xyz_error:.2e}" + (f"  MISSES: {misses}" if misses else ""), flush=True)
        del backend


if __name__ == "__main__":
    sys.exit(main())
