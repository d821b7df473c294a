"""``d4rt bench``: encode latency and query throughput of each backend beside eager PyTorch.

    d4rt bench --export exported/ --batch-sizes 1024,8192 --repeats 10 --json bench.json
    d4rt bench --model g --batch-sizes 65536 --json bench-g.json          # a preset, random weights, no export
    d4rt bench --model checkpoints/tiny-synthetic --backends torch-triton-float32

``--export`` times an export folder on every backend that loads here (and eager PyTorch from the checkpoint its
manifest names). ``--model`` times the PyTorch model itself, with no ONNX export: a preset name (seeded random weights,
built directly on the GPU) or a ``save_pretrained`` directory, with the attention backends eager / sdpa / triton in
``--dtype`` (triton only where the kernels can run: a CUDA GPU, or the interpreter with TRITON_INTERPRET=1).

Each number is the median over ``--repeats`` timed runs after ``--warmup`` untimed ones. Encode is the backend's
encoder call alone (the clip is resized beforehand); a query batch is ``rt.query`` end to end (host checks, the
engine call, the copy back, the sigmoids). Random frames and queries: speed does not depend on the content. The JSON
(and a Markdown table beside it) is rewritten after every backend, so a run cut short keeps what finished.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from d4rt.cli.common import UsageError, positive_int

CANDIDATES = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch")
DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--export", metavar="DIR", help="an export folder (d4rt export / build-engine); --engines is "
                     "its deprecated old name")
    src.add_argument("--model", help="time the PyTorch model without an export: a preset (tiny, base, g; random "
                     "weights) or a save_pretrained directory")  # fmt: skip
    p.add_argument("--backends", default="auto", help="comma list, e.g. onnxruntime-cpu,torch,torch-sdpa-bfloat16 "
                   "(auto: with --export every backend that loads here and eager PyTorch; with --model "
                   "torch-eager, torch-sdpa and torch-triton in --dtype)")  # fmt: skip
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="weight dtype of --model's auto backends")
    p.add_argument("--batch-sizes", default="1024,8192", help="query batch sizes to time")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed runs per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights (--model PRESET)")
    p.add_argument("--json", default=None, help="where to write the results (default: EXPORT/bench.json with "
                   "--export, ./bench-MODEL.json with --model); a .md table is written beside it")  # fmt: skip


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-sizes must be a comma list of positive integers, e.g. 1024,8192; got {text!r}")
    return sizes


def _model_backends(args: argparse.Namespace) -> list[str]:
    if args.backends != "auto":
        names = [n.strip() for n in args.backends.split(",") if n.strip()]
        wrong = [n for n in names if not n.startswith("torch")]
        if wrong:
            raise UsageError(f"--model times the PyTorch model only: use torch[-ATTENTION[-DTYPE]] backends, not "
                             f"{wrong}; time an export folder with --export")  # fmt: skip
        return names
    names = [f"torch-eager-{args.dtype}", f"torch-sdpa-{args.dtype}"]
    interpreting = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")
    if interpreting or _cuda_available():
        names.append(f"torch-triton-{args.dtype}")
    return names


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def validate(args: argparse.Namespace) -> None:
    args.batch_size_list = _batch_sizes(args.batch_sizes)
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.model is not None:
        from d4rt.config import PRESETS

        if args.model not in PRESETS and not (Path(args.model) / "config.json").is_file():
            raise UsageError(f"--model {args.model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a "
                             "save_pretrained directory (one holding config.json)")  # fmt: skip
        if args.backends != "auto":
            _model_backends(args)
    elif not Path(args.export).is_dir():
        raise UsageError(f"--export {args.export} is not a directory; export one with `d4rt export CKPT --out DIR`")


def _row_cells(batch_sizes: list[int]):
    from d4rt.benchmarking import format_number

    def cells(r: dict) -> list:
        return [r["backend"], format_number(r["encode_ms"])] + [
            format_number(r["query"][str(b)]["queries_per_s"]) for b in batch_sizes
        ]

    return cells


def run(args: argparse.Namespace) -> int:
    from d4rt.benchmarking import RowWriter, bench_runtime, load_for_bench, load_model_for_bench, run_record

    batch_sizes = getattr(args, "batch_size_list", None) or _batch_sizes(args.batch_sizes)
    if args.model is not None:
        names = _model_backends(args)
        from d4rt.config import PRESETS

        preset = args.model in PRESETS  # a preset name wins over a folder of the same name, as in load_model_for_bench
        model_name = args.model if preset else Path(args.model).resolve().name
        model_info = {"name": model_name, "source": args.model,
                      "weights": f"random (seed {args.seed})" if preset else "checkpoint"}  # fmt: skip
        path = Path(args.json) if args.json else Path(f"bench-{model_name}.json")

        def open_backend(name: str):
            return load_model_for_bench(args.model, name, seed=args.seed)
    else:
        from d4rt.runtime.manifest import read_manifest

        manifest = read_manifest(args.export)
        names = list(CANDIDATES) if args.backends == "auto" else [n.strip() for n in args.backends.split(",")]
        model_info = {"name": manifest.config["name"], "precision": manifest.precision,
                      "frames": manifest.num_frames, "image_size": manifest.image_size}  # fmt: skip
        path = Path(args.json) if args.json else Path(args.export) / "bench.json"

        def open_backend(name: str):
            return load_for_bench(args.export, name, args.threads)

    header = ["backend", "encode ms", *[f"q/s @ {b}" for b in batch_sizes]]
    writer = RowWriter(
        path.with_suffix(".json"),
        run_record(command=" ".join(["d4rt", *sys.argv[1:]])),
        header,
        _row_cells(batch_sizes),
        title=f"d4rt bench: {model_info['name']}",
        notes=f"median of {args.repeats} after {args.warmup} warm-up; q/s = queries per second",
        model=model_info, repeats=args.repeats, warmup=args.warmup, skipped={},
    )  # fmt: skip
    for name in names:
        try:
            rt = open_backend(name)
        except (ImportError, ValueError, FileNotFoundError, RuntimeError) as e:
            writer.info["skipped"][name] = str(e).splitlines()[0]
            if args.backends != "auto":
                raise
            continue
        print(f"timing {rt.name} ...", flush=True)
        model_info.setdefault("frames", rt.num_frames)
        model_info.setdefault("image_size", rt.image_size)
        writer.add(bench_runtime(rt, batch_sizes, args.repeats, args.warmup))
        del rt
        _free_gpu_memory()

    writer.close()
    print(f"\n{model_info['name']}, T={model_info.get('frames')}, S={model_info.get('image_size')}; "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print(f"{'backend':24s} {'encode ms':>10s}" + "".join(f" {f'q/s @ {b}':>14s}" for b in batch_sizes))
    for r in writer.rows:
        print(f"{r['backend']:24s} {r['encode_ms']:10.2f}"
              + "".join(f" {r['query'][str(b)]['queries_per_s']:14,.0f}" for b in batch_sizes))
    for name, why in writer.info["skipped"].items():
        print(f"(skipped {name}: {why})")
    print(f"wrote {writer.json_path} and {writer.md_path}")
    return 0


def _free_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()
