"""The CPU precision table (docs/precision.md): the whole job per precision, its encoder and decoder, peak RSS.

The job (issue #23): encode one 16 x 256^2 clip once, then answer 32,768 queries in 8,192-query batches, with the
same seeded random weights for every row (saved once; every runner loads that checkpoint or its exports):

  ort-fp32              the fp32 export (fused attention) in ONNX Runtime CPU: today's default deployment
  ort-int8              the int8 export (`d4rt export --precision int8`) in ONNX Runtime CPU
  torch-fp32            the torch backend, sdpa, float32
  torch-bf16            the torch backend in bf16 (eager): what precision="auto" runs on a CPU with AMX
  torch-bf16-compiled   the same, decoder under torch.compile (its one-off compilation reported apart)
  cpp-bf16              optional: the C++ runtime's bf16 package, through --cpp-command (see below)

Each row runs in its own child process (peak RSS = VmHWM of that process: weights + scene + a batch). After a
warm-up (one encode and one batch; for the compiled row this is where compilation happens, timed as compile_s),
the job runs --repeats times; encode_ms and decode_s are medians, job_s = encode + decode of the 32,768 queries.

--cpp-command: a shell command template for the cpp-bf16 row (the [cpp] branch's benchmarks/cpp_vs_python.py can
provide one), formatted with {checkpoint} {workdir} {frames} {queries} {batch} {repeats}; it must print, as its
last line, one JSON object with encode_ms, decode_s and peak_rss_gb (the same as this script's children).

    python benchmarks/precision_speed.py --preset base --workdir /tmp/d4rt_precision_speed      # the table
    python benchmarks/precision_speed.py --preset tiny --frames 4 --queries 2048 --batch 1024 --repeats 1   # smoke

Writes benchmarks/results/<date>-<device>-precision-<preset>.json and .md row by row (d4rt.benchmarking.RowWriter),
each row with the load average when it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNNERS = ("ort-fp32", "ort-int8", "torch-fp32", "torch-bf16", "torch-bf16-compiled", "cpp-bf16")
EXPORTS = {"ort-fp32": "fp32", "ort-int8": "int8"}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def peak_rss_gb() -> float:
    """This process's peak resident set (VmHWM), GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


# ----- child: one runner ---------------------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    from d4rt.benchmarking import median_seconds

    rng = np.random.default_rng(0)
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    T, S, n, B = args.frames, config["image_size"], args.queries, args.batch
    video = rng.random((1, T, 3, S, S), dtype=np.float32)
    aspect = np.array([1.5], np.float32)
    uv = rng.random((1, n, 2), dtype=np.float32)
    t = rng.integers(0, T, (1, n, 3)).astype(np.int32)

    if args.runner.startswith("ort-"):
        from d4rt.runtime.backend_onnxruntime import OnnxRuntimeBackend
        from d4rt.runtime.manifest import read_manifest

        backend = OnnxRuntimeBackend(args.export, read_manifest(args.export), "cpu")
    else:
        from d4rt.runtime.backend_torch import TorchBackend

        precision = "bf16" if "bf16" in args.runner else "fp32"
        backend = TorchBackend.open(args.checkpoint, None, args.device, "sdpa", precision,
                                    compile_decoder=args.runner.endswith("compiled"))
    state = {}
    sync = getattr(backend, "synchronize", lambda: None)

    def encode():
        state["scene"] = backend.encode(video, aspect)
        sync()  # (decode returns host arrays: it synchronizes itself)

    def decode():
        for i in range(0, n, B):
            backend.decode(state["scene"], uv[:, i:i + B], t[:, i:i + B])

    start = time.perf_counter()
    encode()
    backend.decode(state["scene"], uv[:, :B], t[:, :B])  # warm-up: sessions, packed weights, compilation
    warmup_s = time.perf_counter() - start
    encode_s = median_seconds(encode, args.repeats, warmup=0)
    decode_s = median_seconds(decode, args.repeats, warmup=0)
    print(json.dumps({"encode_ms": 1e3 * encode_s, "decode_s": decode_s, "warmup_s": warmup_s,
                      "compiled": getattr(backend, "compiled", None), "peak_rss_gb": peak_rss_gb()}))


def prepare(preset: str, workdir: Path, frames: int, seed: int, runners) -> dict[str, Path]:
    """Save the seeded random model once; export what the runners need. -> {"checkpoint", "ort-fp32", ...}."""
    from d4rt.checkpoint import load_pretrained, random_model
    from d4rt.export import export_onnx

    root = workdir / preset
    paths = {"checkpoint": root / "checkpoint"}
    if not (paths["checkpoint"] / "config.json").is_file():
        random_model(preset, seed).save_pretrained(paths["checkpoint"])
    model = None
    for runner, precision in EXPORTS.items():
        if runner not in runners:
            continue
        paths[runner] = root / f"export-{precision}-T{frames}"
        if not (paths[runner] / "manifest.json").is_file():
            model = model or load_pretrained(paths["checkpoint"])
            print(f"exporting {preset} {precision} (T={frames}) to {paths[runner]}", flush=True)
            export_onnx(model, paths[runner], precision=precision, num_frames=frames, min_frames=frames,
                        progress=False, checkpoint={"path": str(paths["checkpoint"].resolve())})
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="base")
    p.add_argument("--runners", nargs="+", default=[r for r in RUNNERS if r != "cpp-bf16"], choices=RUNNERS)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--queries", type=int, default=32768)
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/d4rt_precision_speed"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the torch rows run (cuda: scripts/gpu_check.sh's rows; ORT rows are CPU-only)")
    p.add_argument("--cpp-command", default=None, help="the cpp-bf16 row's command template (see above)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runner", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--export", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    if args.device == "cuda" and any(r.startswith("ort-") for r in args.runners):
        p.error("--device cuda runs the torch rows only: pass --runners torch-fp32 torch-bf16 torch-bf16-compiled")
    if "cpp-bf16" in args.runners and not args.cpp_command:
        p.error("the cpp-bf16 row needs --cpp-command (the C++ runtime's benchmark, see --help)")

    from d4rt.benchmarking import RowWriter, format_number, run_record
    from d4rt.runtime.precision import cpu_bf16_kind

    paths = prepare(args.preset, args.workdir, args.frames, args.seed, args.runners)
    header = ["runner", "job s", "vs ort-fp32", "encode ms", "decode q/s", "peak RSS GB", "warm-up s", "load"]

    def cells(r):
        if "error" in r:
            return [r["runner"], "failed", "", "", "", "", "", r["load_average"]]
        return [r["runner"], format_number(r["job_s"]), format_number(r.get("speedup_vs_ort_fp32")),
                format_number(r["encode_ms"]), format_number(r["queries_per_s"]), format_number(r["peak_rss_gb"]),
                format_number(r["warmup_s"]), r["load_average"]]

    path = args.out / f"{time.strftime('%Y-%m-%d', time.gmtime())}-{args.device}-precision-{args.preset}{args.tag}.json"
    writer = RowWriter(path, run_record(), header, cells, title=f"{args.device.upper()} precision table ({args.preset})",
                       notes=f"encode {args.frames} x S^2 once + {args.queries} queries in {args.batch}-query "
                             f"batches; medians of {args.repeats}; one child process per row; CPU bf16: "
                             f"{cpu_bf16_kind() or 'none'}; load average at start {load_average()}",
                       device=args.device, preset=args.preset, frames=args.frames, queries=args.queries, batch=args.batch,
                       repeats=args.repeats, load_average_start=load_average())
    print(f"{'runner':20s} {'job s':>7s} {'vs ort':>7s} {'encode ms':>10s} {'q/s':>8s} {'RSS GB':>7s} "
          f"{'warm-up s':>9s}  load")
    baseline = None
    for runner in args.runners:
        if runner == "cpp-bf16":
            cmd = args.cpp_command.format(checkpoint=shlex.quote(str(paths["checkpoint"])),
                                          workdir=shlex.quote(str(args.workdir)), frames=args.frames,
                                          queries=args.queries, batch=args.batch, repeats=args.repeats)
            proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=REPO)
        else:
            cmd = [sys.executable, __file__, "--child", "--runner", runner, "--checkpoint", str(paths["checkpoint"]),
                   "--device", args.device, "--frames", str(args.frames), "--queries", str(args.queries), "--batch", str(args.batch),
                   "--repeats", str(args.repeats)]
            cmd += ["--export", str(paths[runner])] if runner in paths else []
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ})
        if proc.returncode:
            writer.add({"runner": runner, "error": proc.stderr.strip()[-2000:], "load_average": load_average()})
            print(f"{runner:20s} failed:\n{proc.stderr[-2000:]}", flush=True)
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        job_s = m["encode_ms"] / 1e3 + m["decode_s"]
        row = {"runner": runner, "job_s": job_s, "encode_ms": m["encode_ms"], "decode_s": m["decode_s"],
               "queries_per_s": args.queries / m["decode_s"], "peak_rss_gb": m["peak_rss_gb"],
               "warmup_s": m.get("warmup_s"), "compiled": m.get("compiled"), "load_average": load_average()}
        if runner == "ort-fp32":
            baseline = job_s
        if baseline:
            row["speedup_vs_ort_fp32"] = baseline / job_s
        writer.add(row)
        print(f"{runner:20s} {job_s:7.2f} {row.get('speedup_vs_ort_fp32', float('nan')):7.2f} "
              f"{row['encode_ms']:10.0f} {row['queries_per_s']:8.0f} {row['peak_rss_gb']:7.2f} "
              f"{row['warmup_s'] or 0:9.1f}  {row['load_average']}", flush=True)
    print(f"wrote {writer.close()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
