"""CPU table: encode latency, queries / s at 1k / 8k / 32k, peak RSS and achieved GFLOP/s, per runner, side by side.

Runners (same weights: a seeded random preset model saved once, every runner loads that checkpoint):
  ort-fused       export_onnx(attention="onnxruntime"): com.microsoft.MultiHeadAttention, 2-D Gemms, fused GELU,
                  separable RGB patches (this branch's default fp32 export), ONNX Runtime CPU
  ort-standard    export_onnx(attention="standard"): the same graph with MatMul -> Softmax -> MatMul (TensorRT's)
  ort-baseline    --baseline PRESET=DIR: an export made by an older d4rt from the same checkpoint (e.g. main before
                  this change: unfused attention, 3-D MatMul + Add, five-node GELU, four-corner RGB gathers)
  torch-sdpa      the PyTorch model, sdpa attention (the torch backend's default)
  torch-eager     the PyTorch model, eager attention (the torch backend's default before)
  opend4rt-ref    OpenD4RT's computation as tests/opend4rt_reference.py writes it from the facts file, in float32:
                  K/V projected from the memory for every query batch (F.multi_head_attention_forward), RGB patches
                  by F.grid_sample on a copy of each query's frame. OpenD4RT's own code is not available offline;
                  this is the closest faithful reference we have.

Each (preset, runner, batch) runs in its own child process, so its peak RSS (VmHWM: weights + scene + the
batch's activations) is its own. Times are medians over --repeats (one fewer above 8k queries) after a warm-up
batch of 1k queries. GFLOP/s counts the
decoder's useful work per query (projections, attention 4 M D per block, MLPs, embedding, heads; not the
OpenD4RT-style per-batch K/V recomputation) and is compared with the matmul rate measured in the same run
(ONNX Runtime MatMul and torch.matmul of the decoder's MLP shape [8192, D] x [D, 4D]), measured in each child
just before and after its decode (the mean of the two): the machine's load moves between rows, so each row's
fraction compares numbers taken minutes apart at most.

    python benchmarks/cpu_decode.py --workdir /tmp/cpu_decode --baseline tiny=/tmp/b/tiny base=/tmp/b/base

Writes benchmarks/results/<date>-cpu-decode.json row by row (and prints each row as it comes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WARMUP_QUERIES = 1024
# Runners measured up to 8k queries only: opend4rt-ref copies a whole frame per query (32k x 3 x 256^2 float32 =
# 25.8 GB, more than this machine has); torch-eager's 32k batch would add minutes for a number the issue has.
MAX_BATCH = {"opend4rt-ref": 8192, "torch-eager": 8192}
RUNNERS = ("ort-baseline", "ort-standard", "ort-fused", "torch-sdpa", "torch-eager", "opend4rt-ref")


# ----- work per query ------------------------------------------------------------------------------------------------
def decoder_flops_per_query(config: dict, memory_tokens: int) -> float:
    """Multiply-adds x 2 of one query through the decoder graph (embedding, blocks, heads)."""
    D, L, mlp, p = config["dec_dim"], config["dec_depth"], config["dec_mlp_dim"], config["rgb_patch"]
    embed = 2 * (2 * (1 + 2 * config["fourier_bands"])) * D + 2 * 3 * p * p * D + 2 * D * D
    block = 2 * D * D * 2 + 4 * memory_tokens * D + 2 * 2 * D * mlp
    return embed + L * block + 2 * D * 13


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


# ----- child: one runner, one batch size -----------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(os.cpu_count())
    rng = np.random.default_rng(0)
    ckpt = Path(args.checkpoint)
    config = json.loads((ckpt / "config.json").read_text())
    T, S, n = args.frames, config["image_size"], args.batch
    video = rng.random((1, T, 3, S, S), dtype=np.float32)
    aspect = np.array([1.5], np.float32)
    uv = rng.random((1, n, 2), dtype=np.float32)
    t = rng.integers(0, T, (1, n, 3)).astype(np.int32)
    small = (uv[:, :WARMUP_QUERIES], t[:, :WARMUP_QUERIES])

    if args.runner.startswith("ort-"):
        from d4rt.runtime.backend_onnxruntime import OnnxRuntimeBackend
        from d4rt.runtime.manifest import read_manifest

        backend = OnnxRuntimeBackend(args.export, read_manifest(args.export), "cpu")
        encode = lambda: backend.encode(video, aspect)  # noqa: E731
        state = encode()
        decode = lambda q=uv, tt=t: backend.decode(state, q, tt)  # noqa: E731
    elif args.runner.startswith("torch-"):
        from d4rt.checkpoint import load_pretrained
        from d4rt.runtime.backend_torch import TorchBackend

        backend = TorchBackend(load_pretrained(ckpt, attention=args.runner.split("-")[1]).eval())
        encode = lambda: backend.encode(video, aspect)  # noqa: E731
        state = encode()
        decode = lambda q=uv, tt=t: backend.decode(state, q, tt)  # noqa: E731
    else:
        encode, decode = opend4rt_reference_runner(ckpt, config, video, aspect, uv, t)

    from d4rt.benchmarking import median_seconds

    encode_s = median_seconds(encode, args.repeats, warmup=1) if args.encode else None
    rate_before = matmul_rates(config["dec_dim"], 3)
    decode(*small)  # warm-up: sessions, thread pools, packed weights (a full-size warm-up would double the run)
    decode_s = median_seconds(decode, args.repeats if n <= 8192 else max(1, args.repeats - 1), warmup=0)
    rate_after = matmul_rates(config["dec_dim"], 3)
    # the matmul rate in this process, around the decode (the machine's load moves between rows)
    rates = {k: (rate_before[k] + rate_after[k]) / 2 for k in rate_before}
    print(json.dumps({"encode_ms": None if encode_s is None else 1e3 * encode_s, "decode_s": decode_s,
                      "peak_rss_gb": peak_rss_kb() / 1e6, "matmul_gflops": rates}))


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM; ru_maxrss would carry over the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def opend4rt_reference_runner(ckpt: Path, config: dict, video, aspect, uv, t):
    """Encode once; per batch: query embedding + decoder blocks that project K/V from the memory (OpenD4RT's
    computation, tests/opend4rt_reference.py in float32)."""
    import math

    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO))
    import tests.opend4rt_reference as ref

    def fourier32(uv_t, bands=8):  # the reference's features, kept in float32
        parts = []
        for c in range(2):
            x = uv_t[..., c : c + 1]
            f = x * (2.0 ** torch.arange(bands, dtype=x.dtype)) * math.pi
            parts += [x, torch.sin(f), torch.cos(f)]
        return torch.cat(parts, -1)

    def rgb_patches32(video_t, uv_t, t_src, size=9):  # the reference's grid_sample on each query's frame, float32
        B, _, _, H, W = video_t.shape
        r = torch.arange(-(size // 2), size // 2 + 1, dtype=uv_t.dtype)
        out = []
        for b in range(B):
            frames = video_t[b, t_src[b]]  # [N, 3, H, W]: a copy of each query's frame, as OpenD4RT does
            x = uv_t[b, :, 0, None, None] * (W - 1) + r[None, None, :]
            y = uv_t[b, :, 1, None, None] * (H - 1) + r[None, :, None]
            grid = torch.stack(torch.broadcast_tensors(x / (W - 1) * 2 - 1, y / (H - 1) * 2 - 1), -1)
            s = torch.nn.functional.grid_sample(frames, grid, mode="bilinear", padding_mode="border",
                                                align_corners=True)
            out.append(s.reshape(uv_t.shape[1], -1))
        return torch.stack(out)

    ref.fourier, ref.rgb_patches = fourier32, rgb_patches32
    position_table = ref.position_table
    ref.position_table = lambda n, d: position_table(n, d).float()
    sd = load_file(str(ckpt / "model.safetensors"))
    v, a = torch.from_numpy(video), torch.from_numpy(aspect)
    heads = (config["enc_heads"], config["dec_heads"])
    memory = {}

    def encode():
        with torch.inference_mode():
            memory["m"] = ref.encode(sd, v, a, heads[0])

    def decode(q=uv, tt=t):
        uv_t, t_t = torch.from_numpy(q), torch.from_numpy(tt).long()
        with torch.inference_mode():
            x = ref.embed_queries(sd, v, uv_t, t_t[..., 0], t_t[..., 1], t_t[..., 2])
            for i in range(config["dec_depth"]):
                x = ref.decoder_block(x, memory["m"], sd, f"decoder.blocks.{i}", heads[1])
            x = ref._ln(x, sd, "decoder.out_norm")
            return {name: ref._linear(x, sd, f"heads.{name}_head") for name in ref.HEADS}

    encode()
    return encode, decode


# ----- matmul rate ---------------------------------------------------------------------------------------------------
def matmul_rates(dim: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of [8192, D] x [D, 4D] in ONNX Runtime (MatMul) and torch.matmul, medians."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from d4rt.benchmarking import median_seconds

    n, k, m = 8192, dim, 4 * dim
    rng = np.random.default_rng(0)
    a, b = rng.random((n, k), dtype=np.float32), rng.random((k, m), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, k])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, m])],
                              [helper.make_tensor("b", TensorProto.FLOAT, [k, m], b.ravel())])
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
                                   .SerializeToString(), providers=["CPUExecutionProvider"])
    flops = 2 * n * k * m
    ort_s = median_seconds(lambda: session.run(None, {"a": a}), repeats)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch_s = median_seconds(lambda: ta @ tb, repeats)
    return {"onnxruntime": flops / ort_s / 1e9, "torch": flops / torch_s / 1e9}


# ----- parent --------------------------------------------------------------------------------------------------------
def prepare(preset: str, workdir: Path, frames: int, seed: int) -> dict[str, Path]:
    """Save the seeded random model once; export it both ways. -> {"checkpoint", "ort-fused", "ort-standard"}."""
    from d4rt.checkpoint import random_model
    from d4rt.export import export_onnx

    root = workdir / preset
    paths = {"checkpoint": root / "checkpoint", "ort-fused": root / "fused", "ort-standard": root / "standard"}
    if not (paths["checkpoint"] / "config.json").is_file():
        random_model(preset, seed).save_pretrained(paths["checkpoint"])
    from d4rt.checkpoint import load_pretrained

    model = load_pretrained(paths["checkpoint"])
    for name, form in (("ort-fused", "onnxruntime"), ("ort-standard", "standard")):
        if not (paths[name] / "manifest.json").is_file():
            export_onnx(model, paths[name], num_frames=frames, attention=form, progress=False,
                        checkpoint={"path": str(paths["checkpoint"].resolve())})
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "base"])
    p.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS)
    p.add_argument("--batches", nargs="+", type=int, default=[1024, 8192, 32768])
    p.add_argument("--frames", type=int, default=16, help="clip length T (M = T/2 * 256 + 1 memory tokens at 256^2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/d4rt_cpu_decode"))
    p.add_argument("--baseline", nargs="*", default=[], metavar="PRESET=DIR",
                   help="an export of workdir/PRESET/checkpoint made by another d4rt version (the ort-baseline row)")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    p.add_argument("--skip-encode", action="store_true", help="do not time the encoder (decode rows only)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runner", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--export", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--encode", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0

    from d4rt.benchmarking import run_record

    baselines = dict(b.split("=", 1) for b in args.baseline)
    rates = matmul_rates(512, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    out_path = args.out / f"{time.strftime('%Y-%m-%d', time.gmtime())}-cpu-decode{args.tag}.json"
    result = {"run": run_record(), "frames": args.frames, "repeats": args.repeats, "matmul_gflops": rates,
              "load_average_start": load_average(), "rows": []}
    print(f"matmul [8192, 512] x [512, 2048]: ONNX Runtime {rates['onnxruntime']:.1f} GFLOP/s, torch "
          f"{rates['torch']:.1f} GFLOP/s; load average {result['load_average_start']}")
    print(f"{'preset':6s} {'runner':13s} {'batch':>6s} {'encode ms':>10s} {'queries/s':>10s} {'peak RSS GB':>12s} "
          f"{'GFLOP/s':>8s} {'matmul':>7s} {'/ matmul':>9s}  load")
    for preset in args.presets:
        paths = prepare(preset, args.workdir, args.frames, args.seed)
        config = json.loads((paths["checkpoint"] / "config.json").read_text())
        M = args.frames // config["tubelet"][0] * (config["image_size"] // config["tubelet"][1]) ** 2 + 1
        flops = decoder_flops_per_query(config, M)
        for runner in args.runners:
            export = baselines.get(preset) if runner == "ort-baseline" else paths.get(runner)
            if runner == "ort-baseline" and not export:
                continue
            for i, batch in enumerate(args.batches):
                if batch > MAX_BATCH.get(runner, batch):
                    continue
                cmd = [sys.executable, __file__, "--child", "--runner", runner, "--checkpoint", str(paths["checkpoint"]),
                       "--batch", str(batch), "--frames", str(args.frames), "--repeats", str(args.repeats)]
                cmd += ["--export", str(export)] if export else []
                cmd += ["--encode"] if i == 0 and not args.skip_encode else []
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode:
                    print(f"{preset} {runner} {batch}: failed\n{proc.stderr[-2000:]}")
                    continue
                m = json.loads(proc.stdout.strip().splitlines()[-1])
                qps = batch / m["decode_s"]
                rate = m["matmul_gflops"]["torch" if runner.startswith(("torch", "opend4rt")) else "onnxruntime"]
                row = {"preset": preset, "runner": runner, "batch": batch, "memory_tokens": M,
                       "encode_ms": m["encode_ms"], "queries_per_s": qps, "peak_rss_gb": m["peak_rss_gb"],
                       "gflops": qps * flops / 1e9, "matmul_gflops": rate, "fraction_of_matmul": qps * flops / 1e9 / rate,
                       "load_average": load_average()}
                result["rows"].append(row)
                out_path.write_text(json.dumps(result, indent=2) + "\n")  # row by row
                enc = f"{row['encode_ms']:.0f}" if row["encode_ms"] is not None else ""
                print(f"{preset:6s} {runner:13s} {batch:6d} {enc:>10s} {qps:10.0f} {row['peak_rss_gb']:12.2f} "
                      f"{row['gflops']:8.1f} {rate:7.1f} {row['fraction_of_matmul']:9.2f}  {row['load_average']}",
                      flush=True)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
