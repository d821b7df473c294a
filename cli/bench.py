"""``d4rt bench``: encode latency and query throughput of each backend beside eager PyTorch.

    d4rt bench --engines engines/ --batch-sizes 1024,8192 --repeats 10 --json bench.json

Each number is the median over ``--repeats`` timed runs after ``--warmup`` untimed ones. Encode is the backend's
encoder call alone (the clip is resized beforehand); a query batch is ``rt.query`` end to end (host checks, the
engine call, the copy back, the sigmoids). Random frames and queries: speed does not depend on the content.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


CANDIDATES = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", required=True, help="an engine directory (d4rt export / build-engine)")
    p.add_argument("--backends", default="auto", help="comma list, e.g. onnxruntime-cpu,torch,torch-sdpa-bfloat16 "
                   "(auto: every backend that loads here, and eager PyTorch)")
    p.add_argument("--batch-sizes", default="1024,8192", help="query batch sizes to time")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", default=None, help="where to write the results (default: ENGINES/bench.json)")


def run(args: argparse.Namespace) -> int:
    from d4rt.benchmarking import bench_runtime, load_for_bench, run_record
    from d4rt.runtime.files import write_text_atomic
    from d4rt.runtime.manifest import read_manifest

    manifest = read_manifest(args.engines)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive integers, got {args.batch_sizes!r}")
    names = CANDIDATES if args.backends == "auto" else tuple(n.strip() for n in args.backends.split(","))
    rows, skipped = [], {}
    for name in names:
        try:
            rt = load_for_bench(args.engines, name, args.threads)
        except (ImportError, ValueError, FileNotFoundError, RuntimeError) as e:
            skipped[name] = str(e).splitlines()[0]
            if args.backends != "auto":
                raise
            continue
        print(f"timing {rt.name} ...", flush=True)
        rows.append(bench_runtime(rt, batch_sizes, args.repeats, args.warmup))
        del rt

    header = f"{'backend':24s} {'encode ms':>10s}" + "".join(f" {f'q/s @ {b}':>14s}" for b in batch_sizes)
    print(f"\n{manifest.config['name']} ({manifest.precision}), T={manifest.num_frames}, S={manifest.image_size}; "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print(header)
    for r in rows:
        print(f"{r['backend']:24s} {r['encode_ms']:10.2f}"
              + "".join(f" {r['query'][str(b)]['queries_per_s']:14,.0f}" for b in batch_sizes))
    for name, why in skipped.items():
        print(f"(skipped {name}: {why})")

    import json

    report = {
        **run_record(command=" ".join(["d4rt", *sys.argv[1:]])),
        "model": {"name": manifest.config["name"], "precision": manifest.precision, "frames": manifest.num_frames,
                  "image_size": manifest.image_size},
        "repeats": args.repeats, "warmup": args.warmup, "results": rows, "skipped": skipped,
    }
    path = Path(args.json) if args.json else Path(args.engines) / "bench.json"
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
