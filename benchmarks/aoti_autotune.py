"""Inductor's max_autotune for the bf16 decoder package: does tuning the GEMMs (AMX micro-kernels against oneDNN's
addmm) make the AOTInductor decoder faster on this CPU?

One decoder package per row, each compiled and timed in its own child process: autotuning off / on, traced at a
query count of 64 (what `d4rt export --aoti` traces) and at the timed count. Timed: one decoder call on
``--queries`` random queries against fixed keys / values (base preset, seeded random weights, 16 frames at 256^2),
median of ``--repeats`` calls after ``--warmup``, through torch's Python AOTInductor loader (the C++ runtime runs the
same package). Each row also gives its largest relative difference to the first row's outputs.

    python benchmarks/aoti_autotune.py --out benchmarks/results        # base, ~3 minutes on 2 cores
    python benchmarks/aoti_autotune.py --preset tiny --frames 4 --queries 1024 --out /tmp/smoke

Results: <out>/<date>-cpu-aoti-autotune-<preset>.json / .md, row by row (d4rt.benchmarking.RowWriter), with date,
device, commit, command and `uptime`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--queries", type=int, default=8192, help="queries per timed decoder call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "autotune,trace,work": one row, in a child
    return p.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """Compile one decoder package and time it; prints one JSON line."""
    import warnings

    import numpy as np
    import torch
    from torch.fx.experimental import _config as fx_config

    from d4rt import D4RT, D4RTConfig
    from d4rt.export.aoti import _example_inputs, precision_model
    from d4rt.export.graphs import DecoderGraph
    from d4rt.export.onnx_export import MAX_QUERIES_TRACED

    autotune, trace, work = args.child.split(",")
    autotune, trace, work = autotune == "1", int(trace), Path(work)
    torch.manual_seed(0)  # the same weights, keys / values and queries in every row
    cfg = D4RTConfig.preset(args.preset).replace(num_frames=args.frames)
    model = precision_model(D4RT(cfg).eval(), "bf16").eval()
    model.set_attention("sdpa")
    (video, keys, values, _, _) = _example_inputs(cfg, args.frames, torch.bfloat16, "cpu")[1]
    uv = torch.rand(1, args.queries, 2)
    t = torch.randint(0, args.frames, (1, args.queries, 3), dtype=torch.int32)
    example = (video, keys, values, uv[:, :trace], t[:, :trace])
    n = torch.export.Dim("N", min=1, max=MAX_QUERIES_TRACED)
    dynamic = {"video": None, "keys": None, "values": None, "uv": {1: n}, "t": {1: n}}
    configs = {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"} if autotune else {}
    with warnings.catch_warnings(), torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        warnings.simplefilter("ignore")
        program = torch.export.export(DecoderGraph(model).eval(), example, dynamic_shapes=dynamic, strict=False)
        start = time.perf_counter()
        path = torch._inductor.aoti_compile_and_package(
            program, package_path=str(work / f"decoder-{int(autotune)}-{trace}.pt2"), inductor_configs=configs)
        compile_s = time.perf_counter() - start
    runner = torch._inductor.aoti_load_package(path)
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup + args.repeats):
            start = time.perf_counter()
            out = runner(video, keys, values, uv, t)
            times.append(time.perf_counter() - start)
    xyz = out[0].float().numpy()
    np.save(work / f"xyz-{int(autotune)}-{trace}.npy", xyz)
    print(json.dumps({"autotune": autotune, "trace_queries": trace, "compile_s": compile_s,
                      "call_s": times[args.warmup:], "median_ms": 1e3 * float(np.median(times[args.warmup:]))}))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    import numpy as np

    from d4rt.benchmarking import RowWriter, run_record

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    environment = run_record()
    environment["uptime"] = uptime
    day = time.strftime("%Y-%m-%d", time.gmtime())
    out = Path(args.out) / f"{day}-cpu-aoti-autotune-{args.preset}.json"
    header = ["max_autotune", "traced queries", "compile s", f"ms / call @ {args.queries}", "vs first row",
              "max rel. diff of xyz"]

    def cells(r):
        return [str(r["autotune"]), r["trace_queries"], f"{r['compile_s']:.1f}", f"{r['median_ms']:.1f}",
                f"{r['speedup']:.3f}x", f"{r['xyz_rel_diff']:.1e}"]

    writer = RowWriter(out, environment, header, cells, title=f"AOTInductor max_autotune, {args.preset} bf16 decoder",
                       notes=(f"{args.frames} frames; one decoder call on {args.queries} queries, median of "
                              f"{args.repeats} after {args.warmup} warm-up, each row in its own process; "
                              f"uptime at start: {uptime}"),
                       preset=args.preset, frames=args.frames, queries=args.queries)
    with tempfile.TemporaryDirectory(prefix="d4rt-autotune-") as work:
        first = None
        for autotune, trace in ((0, 64), (1, 64), (0, args.queries), (1, args.queries)):
            result = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--frames", str(args.frames),
                                     "--queries", str(args.queries), "--repeats", str(args.repeats), "--warmup",
                                     str(args.warmup), "--child", f"{autotune},{trace},{work}"],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                print(result.stderr[-2000:], file=sys.stderr)
                return 1
            row = json.loads(result.stdout.strip().splitlines()[-1])
            xyz = np.load(Path(work) / f"xyz-{autotune}-{trace}.npy")
            first = first or (row["median_ms"], xyz)
            row["speedup"] = first[0] / row["median_ms"]
            row["xyz_rel_diff"] = float(np.abs(xyz - first[1]).max() / np.abs(first[1]).max())
            writer.add(row)
            print(" | ".join(str(c) for c in cells(row)), flush=True)
    writer.close()
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
