"""The model end to end with each attention backend: the encoder forward and a decoder query batch (GPU).

For each preset (tiny, base, g; random weights, built on the GPU and cast to bfloat16, inference mode):
  encode  model.encode(video [1, T, 3, S, S])  (T = the preset's num_frames: 16 for tiny, 48 for base and g)
  decode  model.decode_kv(keys, values, video, queries) for one batch of --queries queries (default 65,536),
          against the precomputed memory keys / values (what the decoder engine does per batch)
with attention "eager", "sdpa" and "triton". Times are triton.testing.do_bench medians (warm-up excluded), and
"rel diff" is ||out - eager|| / ||eager|| of the memory (encode) or xyz (decode).

    python benchmarks/end_to_end.py                     # tiny, base, g; bfloat16
    python benchmarks/end_to_end.py --presets g --queries 4096 65536
    python benchmarks/end_to_end.py --cpu-smoke         # no GPU: tiny preset, 2 frames, interpreter (code path only)

Writes benchmarks/results/<date>-<gpu>-end-to-end.{json,md} (--out to change the folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BACKENDS = ("eager", "sdpa", "triton")


def build_model(preset: str, dtype, device: str):
    import torch

    from d4rt import D4RT, D4RTConfig

    with torch.device(device):
        model = D4RT(D4RTConfig.preset(preset))
    return model.to(dtype).eval()


def random_queries(n: int, frames: int, device: str):
    """uv [1, n, 2] in [0, 1]; t_src, t_tgt, t_cam [1, n] in [0, frames)."""
    import torch

    t = torch.randint(0, frames, (3, 1, n), device=device)
    return torch.rand(1, n, 2, device=device), t[0], t[1], t[2]


def run_preset(preset: str, dtype, device: str, frames: int | None, query_counts: list[int]) -> list[dict]:
    import torch

    from report import median_ms

    model = build_model(preset, dtype, device)
    cfg = model.config
    T = frames or cfg.num_frames
    video = torch.rand(1, T, 3, cfg.image_size, cfg.image_size, device=device, dtype=dtype)
    rows = []

    def record(stage: str, n_queries: int | None, fn, key: str):
        outputs = {}
        for backend in BACKENDS:
            model.set_attention(backend)
            row = {"preset": preset, "stage": stage, "frames": T, "queries": n_queries, "backend": backend,
                   "ms": None, "rel_diff_vs_eager": None, "error": None}  # fmt: skip
            try:
                with torch.inference_mode():
                    row["ms"] = median_ms(fn, device)
                    outputs[backend] = fn()
                    if key:
                        outputs[backend] = outputs[backend][key]
                    outputs[backend] = outputs[backend].float()
                if backend != "eager" and "eager" in outputs:
                    ref = outputs["eager"]
                    row["rel_diff_vs_eager"] = ((outputs[backend] - ref).norm() / ref.norm()).item()
            except torch.cuda.OutOfMemoryError:
                row["error"] = "OOM"
            if device == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
        by = {r["backend"]: r["ms"] for r in rows[-len(BACKENDS) :]}
        for r in rows[-len(BACKENDS) :]:
            r["x_vs_eager"] = by["eager"] / r["ms"] if r["ms"] and by["eager"] else None
            r["x_vs_sdpa"] = by["sdpa"] / r["ms"] if r["ms"] and by["sdpa"] else None

    record("encode", None, lambda: model.encode(video, 1.0), "")
    with torch.inference_mode():
        model.set_attention("sdpa")
        keys, values = model.memory_kv(model.encode(video, 1.0))
    for n in query_counts:
        uv, t_src, t_tgt, t_cam = random_queries(n, T, device)
        record("decode", n, lambda: model.decode_kv(keys, values, video, uv, t_src, t_tgt, t_cam), "xyz")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base", "g"], choices=["tiny", "base", "g"])
    parser.add_argument("--queries", type=int, nargs="+", default=[65536], help="decoder query batch sizes")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny preset, 2 frames, 16 queries, float32, on the "
                        "CPU in Triton's interpreter: checks the code path, the times mean nothing")  # fmt: skip
    args = parser.parse_args(argv)

    from report import choose_device, environment, fmt, markdown_table, write_results

    chosen = choose_device("benchmarks/end_to_end.py", args.cpu_smoke, args.out)
    if chosen is None:
        return 2
    device, out_dir = chosen
    import torch

    if args.cpu_smoke:
        dtype, presets, frames, queries = torch.float32, ["tiny"], 2, [16]
    else:
        dtype, presets, frames, queries = torch.bfloat16, args.presets, None, args.queries

    env = environment(device)
    rows = []
    for preset in presets:
        print(f"{preset}: building and timing ...", flush=True)
        rows += run_preset(preset, dtype, device, frames, queries)
    header = ["preset", "stage", "frames", "queries", "backend", "ms", "x eager", "x sdpa", "rel diff vs eager"]
    table = [
        [r["preset"], r["stage"], r["frames"], r["queries"] or "", r["backend"], r["error"] or fmt(r["ms"]),
         fmt(r["x_vs_eager"]), fmt(r["x_vs_sdpa"]), fmt(r["rel_diff_vs_eager"], 2)]
        for r in rows
    ]  # fmt: skip
    text = markdown_table(header, table)
    notes = (
        f"{str(dtype).replace('torch.', '')}, inference mode, random weights; "
        + ("medians of triton.testing.do_bench. " if device == "cuda" else "CPU smoke run: the times mean nothing. ")
        + "x eager / x sdpa: that backend's time / the row's time (> 1: the row is faster)."
    )
    print(text)
    print(notes)
    name = "end-to-end" + ("-cpu-smoke" if args.cpu_smoke else "")
    path = write_results(name, env, {"dtype": str(dtype), "results": rows}, notes + "\n\n" + text, out_dir)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
