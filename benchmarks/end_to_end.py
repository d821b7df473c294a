"""The model end to end with each attention backend: the encoder forward and a decoder query batch (GPU).

For each preset (tiny, base, g; random weights, built on the GPU and cast to bfloat16, inference mode):
  encode  model.encode(video [1, T, 3, S, S])  (T = the preset's num_frames: 16 for tiny, 48 for base and g)
  decode  model.decode_kv(keys, values, video, queries) for one batch of --queries queries (default 65,536),
          against the precomputed memory keys / values (what the decoder engine does per batch)
with attention "eager", "sdpa" and "triton", and optionally "sdpa+compile" / "triton+compile" (the same step under
torch.compile; its first call, the compilation, is part of the warm-up). Times are triton.testing.do_bench medians
(warm-up excluded), and "rel diff" is ||out - eager|| / ||eager|| of the memory (encode) or xyz (decode).
"TFLOP" is the step's work counted by torch.utils.flop_counter (on the eager model), "x floor" the time over
TFLOP / the measured bf16 matmul rate (1.0 = every multiply at the matmul peak), "q/s" a decode's queries per second.

    python benchmarks/end_to_end.py                     # tiny, base, g; bfloat16
    python benchmarks/end_to_end.py --presets g --queries 4096 65536
    python benchmarks/end_to_end.py --presets g --backends sdpa+compile triton+compile
    python benchmarks/end_to_end.py --cpu-smoke         # no GPU: tiny at 64^2, 2 frames, interpreter (code path only)

Writes benchmarks/results/<date>-<gpu>-end-to-end.{json,md} (--out to change the folder; --name to change the name)
after every row, so a run cut short keeps what finished ("complete": false in the JSON).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BACKENDS = ("eager", "sdpa", "triton", "sdpa+compile", "triton+compile")


def build_model(preset: str, dtype, device: str, image_size: int | None = None):
    import torch

    from d4rt import D4RT, D4RTConfig

    with torch.device(device):
        model = D4RT(D4RTConfig.preset(preset, **({"image_size": image_size} if image_size else {})))
    return model.to(dtype).eval()


def random_queries(n: int, frames: int, device: str):
    """uv [1, n, 2] in [0, 1]; t_src, t_tgt, t_cam [1, n] in [0, frames)."""
    import torch

    t = torch.randint(0, frames, (3, 1, n), device=device)
    return torch.rand(1, n, 2, device=device), t[0], t[1], t[2]


def run_preset(preset: str, dtype, device: str, frames: int | None, query_counts: list[int], backends: list[str],
               writer, image_size: int | None = None, rates: dict | None = None) -> list[dict]:
    """Time encode and each decode batch size with each backend; every row goes to ``writer`` when measured."""
    import torch

    from report import count_flops, median_ms

    model = build_model(preset, dtype, device, image_size)
    cfg = model.config
    T = frames or cfg.num_frames
    video = torch.rand(1, T, 3, cfg.image_size, cfg.image_size, device=device, dtype=dtype)
    rows = []

    def record(stage: str, n_queries: int | None, fn, key: str):
        model.set_attention("eager")  # explicit matmuls: every multiply is counted
        with torch.inference_mode():
            flops = count_flops(fn)
        floor_ms = flops / (rates["matmul_tflops"] * 1e9) if rates and dtype != torch.float32 else None
        outputs, mine = {}, []
        for backend in backends:
            attention, _, compiled = backend.partition("+")
            model.set_attention(attention)
            step = torch.compile(fn) if compiled else fn
            row = {"preset": preset, "stage": stage, "frames": T, "queries": n_queries, "backend": backend,
                   "ms": None, "rel_diff_vs_eager": None, "error": None, "tflop": flops / 1e12,
                   "floor_ms": floor_ms, "x_over_floor": None, "queries_per_s": None}  # fmt: skip
            try:
                with torch.inference_mode():
                    row["ms"] = median_ms(step, device)
                    row["x_over_floor"] = row["ms"] / floor_ms if floor_ms else None
                    row["queries_per_s"] = n_queries / row["ms"] * 1e3 if n_queries else None
                    out = step()
                    outputs[backend] = (out[key] if key else out).float()
                if backend != "eager" and "eager" in outputs:
                    ref = outputs["eager"]
                    row["rel_diff_vs_eager"] = ((outputs[backend] - ref).norm() / ref.norm()).item()
            except torch.cuda.OutOfMemoryError:
                row["error"] = "OOM"
            except Exception as e:  # torch.compile refusing the model: say so in the row, go on
                if not compiled:
                    raise
                row["error"] = "failed: " + (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            if device == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            mine.append(row)
            writer.add(row)
        by = {r["backend"]: r["ms"] for r in mine}
        for r in mine:
            r["x_vs_eager"] = by["eager"] / r["ms"] if r["ms"] and by.get("eager") else None
            r["x_vs_sdpa"] = by["sdpa"] / r["ms"] if r["ms"] and by.get("sdpa") else None
        writer.flush()

    record("encode", None, lambda: model.encode(video, 1.0), "")
    with torch.inference_mode():
        model.set_attention("sdpa")
        keys, values = model.memory_kv(model.encode(video, 1.0))
    for n in query_counts:
        uv, t_src, t_tgt, t_cam = random_queries(n, T, device)
        record("decode", n, lambda: model.decode_kv(keys, values, video, uv, t_src, t_tgt, t_cam), "xyz")
    del model, keys, values
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base", "g"], choices=["tiny", "base", "g"])
    parser.add_argument("--queries", type=int, nargs="+", default=[65536], help="decoder query batch sizes")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS[:3]), choices=BACKENDS,
                        help="attention backends (+compile: under torch.compile)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="end-to-end", help="results file name (after the date and device)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny preset at 64^2, 2 frames, 16 queries, float32, "
                        "on the CPU in Triton's interpreter: checks the code path, the times mean nothing")  # fmt: skip
    args = parser.parse_args(argv)

    from report import choose_device, environment, fmt, measure_rates, results_writer

    chosen = choose_device("benchmarks/end_to_end.py", args.cpu_smoke, args.out)
    if chosen is None:
        return 2
    device, out_dir = chosen
    import torch

    if args.cpu_smoke:
        dtype, presets, frames, queries, size = torch.float32, ["tiny"], 2, [16], 64
    else:
        dtype, presets, frames, queries, size = torch.bfloat16, args.presets, None, args.queries, None

    env = environment(device)
    rates = measure_rates(device)
    header = ["preset", "stage", "frames", "queries", "backend", "ms", "x eager", "x sdpa", "TFLOP", "x floor", "q/s",
              "rel diff vs eager"]  # fmt: skip

    def cells(r: dict) -> list:
        return [r["preset"], r["stage"], r["frames"], r["queries"] or "", r["backend"], r["error"] or fmt(r["ms"]),
                fmt(r.get("x_vs_eager")), fmt(r.get("x_vs_sdpa")), fmt(r["tflop"]), fmt(r["x_over_floor"]),
                fmt(r["queries_per_s"]), fmt(r["rel_diff_vs_eager"], 2)]  # fmt: skip

    notes = (
        f"{str(dtype).replace('torch.', '')}, inference mode, random weights; "
        + ("medians of triton.testing.do_bench. " if device == "cuda" else "CPU smoke run: the times mean nothing. ")
        + "x eager / x sdpa: that backend's time / the row's time (> 1: the row is faster). "
        + f"Measured rates: {', '.join(f'{k} {v:.0f}' for k, v in rates.items()) or 'none (CPU)'}."
    )
    name = args.name + ("-cpu-smoke" if args.cpu_smoke else "")
    writer = results_writer(name, env, header, cells, notes, out_dir, dtype=str(dtype), rates=rates)
    print(f"writing {writer.json_path} and {writer.md_path} row by row", flush=True)
    for preset in presets:
        print(f"{preset}: building and timing ...", flush=True)
        run_preset(preset, dtype, device, frames, queries, args.backends, writer, size, rates)
    path = writer.close()
    print(writer.markdown())
    print(f"wrote {path} and {writer.md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
