"""``d4rt build-engine``: TensorRT engines from an export directory, for the GPU of this machine.

    d4rt build-engine engines/ --out engines/ --min-queries 1 --opt-queries 4096 --max-queries 65536 \\
        --workspace-gb 8 --timing-cache trt.cache
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx_dir", help="a `d4rt export` directory")
    p.add_argument("--out", default=None, help="where to write the engines (default: ONNX_DIR)")
    p.add_argument("--min-queries", type=int, default=1, help="smallest query batch of the profile")
    p.add_argument("--opt-queries", type=int, default=4096, help="query batch TensorRT optimises for")
    p.add_argument("--max-queries", type=int, default=65536, help="largest query batch (the runtime splits above)")
    p.add_argument("--workspace-gb", type=float, default=None, help="workspace memory limit (default: TensorRT's)")
    p.add_argument("--timing-cache", default=None, help="timing cache file, read when present and updated")
    p.add_argument("--hardware-compat", choices=("none", "ampere+", "same-compute-capability"), default="none",
                   help="build engines that also run on other GPUs (slower)")
    p.add_argument("--version-compat", action="store_true", help="engines that run on later TensorRT versions")
    p.add_argument("--fp16-flag", action="store_true",
                   help="TensorRT 10 only: FP16 builder flag on a float32 graph (TensorRT 11: export --precision fp16)")


def validate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from d4rt.cli.common import UsageError

    if not (Path(args.onnx_dir) / "manifest.json").is_file():
        raise UsageError(f"{args.onnx_dir} is not an export directory (no manifest.json); make one with "
                         f"`d4rt export CKPT_DIR --out DIR`")
    if not 1 <= args.min_queries <= args.opt_queries <= args.max_queries:
        raise UsageError(f"the query profile must satisfy 1 <= --min-queries <= --opt-queries <= --max-queries, got "
                         f"{args.min_queries}, {args.opt_queries}, {args.max_queries}")
    if args.workspace_gb is not None and not args.workspace_gb > 0:
        raise UsageError(f"--workspace-gb must be > 0, got {args.workspace_gb}")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; name a folder")


def run(args: argparse.Namespace) -> int:
    import time

    from d4rt.export.tensorrt import EngineBuildOptions, build_engines

    options = EngineBuildOptions(
        min_queries=args.min_queries, opt_queries=args.opt_queries, max_queries=args.max_queries,
        workspace_gb=args.workspace_gb, timing_cache=args.timing_cache, hardware_compat=args.hardware_compat,
        version_compat=args.version_compat, fp16_flag=args.fp16_flag,
    )
    start = time.perf_counter()
    manifest = build_engines(args.onnx_dir, args.out, options)
    e = manifest.engines
    profile = e["profile"]
    print(f"built TensorRT {e['tensorrt_version']} engines for {e['gpu_name']} (sm {e['compute_capability']}), "
          f"{e['precision']}, N in [{profile['min']}, {profile['max']}], in {time.perf_counter() - start:.0f} s")
    return 0
