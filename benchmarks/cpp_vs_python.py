"""The C++ runtime against the Python torch path on the same export: the whole job, fp32 and bf16.

Whole job: encode one clip (16 frames at 256^2) and answer 32,768 random queries in batches of 8,192, timed from
frames in to answers out, after the runtime is loaded (load time reported apart). The model is the base preset
with seeded random weights (speed does not depend on what the weights learned). Rows:

- cpp:          d4rt-bench (cpp/tools/d4rt_bench.cpp): the C++ runtime on the AOTInductor packages, in-process
- python-torch: d4rt.runtime.load(export, backend="torch", precision=...): the eager PyTorch model (sdpa attention)
- python-aoti:  d4rt.runtime.load(export, backend="aoti", precision=...): the same packages through torch's Python loader

    python benchmarks/cpp_vs_python.py --out benchmarks/results            # base, CPU, fp32 + bf16 (minutes)
    python benchmarks/cpp_vs_python.py --cpu-smoke --out /tmp/smoke        # tiny, a few seconds of timing
    python benchmarks/cpp_vs_python.py --device cuda --out gpu_out         # CUDA packages (Triton attention inside)

Builds the C++ runtime first (CMake against this Python's torch wheel) unless --build names a built folder.
Results: <out>/<date>-<device>-cpp-vs-python-<preset>.json / .md, written row by row (d4rt.benchmarking.RowWriter), with
date, device, commit, command and `uptime` (timings from a loaded machine mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--queries", type=int, default=32768)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for every runtime (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--build", default=None, help="a built C++ folder (default: build it into <work>/cpp-build)")
    p.add_argument("--work", default=None, help="where the export goes (default: a temporary folder)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny preset, 4 frames at 64^2, 2,048 queries, one repeat: the plumbing only")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.preset, args.frames, args.image_size, args.queries, args.batch_size = "tiny", 4, 64, 2048, 1024
        args.repeats, args.warmup, args.precisions = 1, 0, "fp32"
    args.precisions = [x for x in args.precisions.split(",") if x]
    return args


def build_cpp(build: Path) -> Path:
    """Configure and build the C++ runtime against this Python's torch (no make, no venv: the GPU machine has
    neither); returns the build folder."""
    import torch.utils

    if not (build / "CMakeCache.txt").is_file():
        subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DD4RT_BUILD_TESTS=OFF",
                        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", "d4rt-bench"],
                   check=True, stdout=subprocess.DEVNULL)
    return build


def make_export(args, work: Path) -> Path:
    """A seeded random model of the preset, saved, exported (ONNX graphs + AOTInductor packages)."""
    import torch

    from d4rt import D4RT, D4RTConfig
    from d4rt.export import export_onnx
    from d4rt.export.aoti import export_aoti

    torch.manual_seed(0)
    config = D4RTConfig.preset(args.preset, image_size=args.image_size)
    model = D4RT(config).eval()
    model.save_pretrained(work / "checkpoint")
    export = work / "export"
    export_onnx(model, export, num_frames=args.frames, checkpoint={"path": "../checkpoint"}, progress=False)
    export_aoti(model, export, precisions=tuple(args.precisions), device=args.device)
    return export


def time_python(export: Path, backend: str, precision: str, inputs, args) -> dict:
    import torch

    from d4rt.runtime import load

    if args.threads:
        torch.set_num_threads(args.threads)
    frames, uv, t = inputs
    start = time.perf_counter()
    rt = load(export, backend=backend, precision=precision, threads=args.threads or None)
    load_s = time.perf_counter() - start
    jobs, encodes = [], []
    for i in range(args.warmup + args.repeats):
        a = time.perf_counter()
        scene = rt.encode(frames)
        rt.backend.synchronize()
        b = time.perf_counter()
        rt.query(scene, uv, t[:, 0], t[:, 1], t[:, 2], batch_size=args.batch_size)
        c = time.perf_counter()
        if i >= args.warmup:
            jobs.append(c - a)
            encodes.append(b - a)
    return {"load_s": load_s, "job_s": jobs, "encode_s": encodes}


def time_cpp(build: Path, export: Path, precision: str, files: list[Path], args) -> dict:
    command = [str(build / "d4rt-bench"), str(export), *map(str, files), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--precision", precision, "--repeats", str(args.repeats),
               "--warmup", str(args.warmup)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"d4rt-bench failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def main(argv=None) -> int:
    args = parse_args(argv)
    from d4rt.benchmarking import RowWriter, format_number, run_record

    work = Path(args.work or tempfile.mkdtemp(prefix="d4rt-cpp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    build = Path(args.build) if args.build else build_cpp(work / "cpp-build")
    export = make_export(args, work)
    prepare_s = time.perf_counter() - start

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.frames, args.image_size, args.image_size, 3), dtype=np.uint8)
    uv = rng.random((args.queries, 2), dtype=np.float32)
    t = rng.integers(0, args.frames, (args.queries, 3)).astype(np.int32)
    files = [work / "frames.npy", work / "uv.npy", work / "t.npy"]
    for path, array in zip(files, (frames, uv, t)):
        np.save(path, array)

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    environment = run_record()
    environment["uptime"] = uptime
    day = time.strftime("%Y-%m-%d", time.gmtime())
    out = Path(args.out) / f"{day}-{args.device}-cpp-vs-python-{args.preset}{'-smoke' if args.cpu_smoke else ''}.json"
    header = ["precision", "runtime", "load s", "whole job s (median)", "encode s", "queries / s"]

    def cells(r):
        return [r["precision"], r["runtime"], format_number(r["load_s"]), format_number(r["job_s_median"]),
                format_number(r["encode_s_median"]), format_number(r["queries_per_s"])]

    writer = RowWriter(out, environment, header, cells, title=f"C++ vs Python, {args.preset}, whole job",
                       notes=(f"encode {args.frames} x {args.image_size}^2 + {args.queries} queries in batches of "
                              f"{args.batch_size}; median of {args.repeats} after {args.warmup} warm-up; threads "
                              f"{args.threads or 'default'}; {args.device}; uptime at start: {uptime}"),
                       preset=args.preset, frames=args.frames, image_size=args.image_size, queries=args.queries,
                       batch_size=args.batch_size, prepare_s=prepare_s)
    for precision in args.precisions:
        for runtime in ("cpp", "python-torch", "python-aoti"):
            if runtime == "cpp":
                timing = time_cpp(build, export, precision, files, args)
            else:
                timing = time_python(export, runtime.removeprefix("python-"), precision, (frames, uv, t), args)
            job = float(np.median(timing["job_s"]))
            row = {"precision": precision, "runtime": runtime, "load_s": timing["load_s"], "job_s": timing["job_s"],
                   "job_s_median": job, "encode_s_median": float(np.median(timing["encode_s"])),
                   "queries_per_s": args.queries / (job - float(np.median(timing["encode_s"])))}
            writer.add(row)
            print(" | ".join(str(c) for c in cells(row)), flush=True)
    path = writer.close()
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
