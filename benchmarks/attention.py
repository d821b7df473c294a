"""Attention at the D4RT shapes: eager, every SDPA backend, FlexAttention and our Triton kernels (GPU).

For each preset (tiny, base, g):
  local  the encoder's per-frame attention: B * T/2 windows of (S/16)^2 tokens (256 at 256^2), encoder heads;
  cross  the decoder's cross-attention: Nq in {65,536; 2,048; 262,144} queries against Nk = M memory tokens
         (6,145 for 48 frames), decoder heads.
Methods: "eager" (the model's matmul -> float32 softmax -> matmul), "sdpa:<backend>" for FLASH_ATTENTION,
EFFICIENT_ATTENTION, CUDNN_ATTENTION and MATH (each forced with torch.nn.attention.sdpa_kernel; "n/a" when it
refuses the shape), "flex" (torch.compile'd FlexAttention; a block mask for the windows) and "triton" (ours).
Times are triton.testing.do_bench medians (warm-up excluded). TFLOP/s counts 4 * B * H * Nq * Nk * D for the
forward (Nk = the window for local attention), x3.5 with --backward (forward + backward). "floor" is the larger of
flops / measured matmul rate and bytes (q, k, v read once, out written once) / measured copy bandwidth.

Baselines get contiguous [batch, heads, tokens, D] inputs (windows as the batch for local attention), prepared
outside the timed region; ours reads the model's strided views (packed q/k/v projection) in place.

    python benchmarks/attention.py                          # tiny, base, g in bfloat16, forward
    python benchmarks/attention.py --presets g --backward
    python benchmarks/attention.py --cpu-smoke              # no GPU: tiny shapes in the interpreter (code path only)

Writes benchmarks/results/<date>-<gpu>-attention.{json,md} (--out to change the folder) after every row, so a run
cut short keeps what finished ("complete": false in the JSON).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

QUERY_COUNTS = (65536, 2048, 262144)  # the target shape first: a run cut short by a time-out still has it
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


@dataclass(frozen=True)
class Case:
    preset: str
    op: str  # "local" | "cross"
    batch: int
    heads: int
    n_queries: int
    n_keys: int  # all keys (local: = n_queries)
    head_dim: int
    window: int | None = None

    @property
    def keys_per_query(self) -> int:
        return self.window or self.n_keys

    @property
    def label(self) -> str:
        shape = f"B{self.batch} H{self.heads} Nq{self.n_queries} Nk{self.keys_per_query} D{self.head_dim}"
        return f"{self.preset} {self.op} {shape}" + (f" ({self.n_queries // self.window} windows)" if self.window else "")


def preset_cases(presets: list[str]) -> list[Case]:
    from d4rt import D4RTConfig

    cases = []
    for name in presets:
        cfg = D4RTConfig.preset(name)
        window = cfg.tokens_per_slice
        n_video = cfg.memory_tokens() - 1
        cases.append(Case(name, "local", 1, cfg.enc_heads, n_video, n_video, cfg.enc_head_dim, window))
        for nq in QUERY_COUNTS:
            cases.append(Case(name, "cross", 1, cfg.dec_heads, nq, cfg.memory_tokens(), cfg.dec_head_dim))
    return cases


def smoke_cases() -> list[Case]:
    return [Case("smoke", "local", 1, 1, 2 * 40, 2 * 40, 24, 40), Case("smoke", "cross", 1, 1, 5, 70, 24)]


def make_methods(case: Case, dtype, device: str, backward: bool):
    """{name: fn} (each fn runs one forward, or forward + backward) and {name: fn returning the output}."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from d4rt.kernels import cross_attention, local_attention
    from d4rt.models.attention import _windows, eager_attention

    B, H, D = case.batch, case.heads, case.head_dim
    scale = 1.0 / math.sqrt(D)
    opts = dict(dtype=dtype, device=device, requires_grad=backward)
    if case.op == "local":  # ours: views of the packed projection, as the encoder passes them
        packed = torch.randn(B, case.n_queries, 3, H, D, **opts)
        ours_in = tuple(t.transpose(1, 2) for t in packed.unbind(2))
        ours_leaves = (packed,)
        full = [t.detach().contiguous() for t in ours_in]  # [B, H, N, D]

        def ours():
            return local_attention(*ours_in, case.window, scale=scale)

        base_in = [_windows(t, case.window).contiguous() for t in full]  # [B * windows, H, window, D]
    else:  # ours: q a view of [B, Nq, H, D], k / v views of a packed [B, Nk, 2, H, D] projection (the decoder's)
        q_bnhd = torch.randn(B, case.n_queries, H, D, **opts)
        kv = torch.randn(B, case.n_keys, 2, H, D, **opts)
        k, v = (t.transpose(1, 2) for t in kv.unbind(2))
        ours_in = (q_bnhd.transpose(1, 2), k, v)
        ours_leaves = (q_bnhd, kv)
        full = [t.detach().contiguous() for t in ours_in]

        def ours():
            return cross_attention(*ours_in, scale=scale)

        base_in = full
    base_in = [t.requires_grad_(backward) for t in base_in]
    full = [t.requires_grad_(backward) for t in full]

    forward = {"eager": lambda: eager_attention(*base_in, scale)}
    for backend in SDPA_BACKENDS:
        forward[f"sdpa:{backend.lower().replace('_attention', '')}"] = _sdpa(F, sdpa_kernel, SDPBackend, backend,
                                                                               base_in, scale)  # fmt: skip
    if device == "cuda":
        forward["flex"] = _flex(case, full, scale)
    forward["triton"] = ours

    def timed(name, fn):
        if not backward:
            return fn
        leaves = ours_leaves if name == "triton" else (full if name == "flex" else base_in)
        grad_out = []  # made on the first call (inside the caller's error handling), then reused

        def forward_backward():
            out = fn()
            if not grad_out:
                grad_out.append(torch.randn_like(out))
            torch.autograd.grad(out, leaves, grad_out[0])

        return forward_backward

    return {name: timed(name, fn) for name, fn in forward.items()}, forward


def _sdpa(F, sdpa_kernel, SDPBackend, backend, inputs, scale):
    def run():
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return F.scaled_dot_product_attention(*inputs, scale=scale)

    return run


def _flex(case: Case, full, scale):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    block_mask = None
    if case.op == "local":
        window = case.window

        def same_window(b, h, q_idx, kv_idx):
            return q_idx // window == kv_idx // window

        block_mask = create_block_mask(same_window, None, None, case.n_queries, case.n_keys, device="cuda")

    def run():
        return compiled(*full, block_mask=block_mask, scale=scale)

    return run


def run_case(case: Case, dtype, device: str, backward: bool, rates: dict, writer) -> list[dict]:
    """Time every method on ``case``; each row goes to ``writer`` as soon as it is measured (the speed-ups are filled
    in once the case is done)."""
    import torch

    from d4rt.models.attention import _windows
    from report import median_ms

    flops = 4 * case.batch * case.heads * case.n_queries * case.keys_per_query * case.head_dim * (3.5 if backward else 1)
    elem = torch.finfo(dtype).bits // 8
    io_bytes = elem * case.batch * case.heads * case.head_dim * (2 * case.n_queries + 2 * case.n_keys)
    floor_ms = None
    if rates and not backward and dtype != torch.float32:  # the rate is measured in bfloat16
        floor_ms = max(flops / (rates["matmul_tflops"] * 1e9), io_bytes / (rates["copy_gbps"] * 1e6))
    timed, forward = make_methods(case, dtype, device, backward)

    def comparable(out):  # local outputs in the windows-as-batch layout of the baselines
        if case.op == "local" and out.shape[2] == case.n_queries:
            return _windows(out, case.window)
        return out

    rows, reference = [], None
    for name in ["triton", *[n for n in timed if n != "triton"]]:  # ours first: the others are compared to it
        row = {**asdict(case), "method": name, "ms": None, "tflops": None, "rel_diff_vs_triton": None, "error": None}
        try:
            row["ms"] = median_ms(timed[name], device)
            row["tflops"] = flops / row["ms"] / 1e9
            with torch.no_grad():
                out = comparable(forward[name]().float())
            if name == "triton":
                reference = out
            elif reference is not None:
                row["rel_diff_vs_triton"] = ((out - reference).norm() / reference.norm()).item()
            del out
        except torch.cuda.OutOfMemoryError:
            row["error"] = "OOM"
        except Exception as e:  # a baseline refusing the shape (SDPA backend, FlexAttention); ours must not fail
            if name == "triton":
                raise
            row["error"] = "n/a: " + (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if device == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        writer.add(row)
    order = list(timed)
    rows.sort(key=lambda r: order.index(r["method"]))
    by_name = {r["method"]: r["ms"] for r in rows}
    sdpa_times = [t for n, t in by_name.items() if n.startswith("sdpa:") and t is not None]
    best_sdpa = min(sdpa_times) if sdpa_times else None
    for row in rows:
        t = row["ms"]
        row["x_vs_eager"] = by_name["eager"] / t if t and by_name.get("eager") else None
        row["x_vs_best_sdpa"] = best_sdpa / t if t and best_sdpa else None
        row["floor_ms"] = floor_ms
    writer.rows[-len(rows):] = rows  # the case's rows in method order, with their speed-ups
    writer.flush()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base", "g"], choices=["tiny", "base", "g"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="attention", help="results file name (after the date and device)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU in Triton's interpreter, "
                        "float32: checks the table and JSON code path, the times mean nothing")  # fmt: skip
    args = parser.parse_args(argv)

    from report import choose_device, environment, fmt, measure_rates, results_writer

    chosen = choose_device("benchmarks/attention.py", args.cpu_smoke, args.out)
    if chosen is None:
        return 2
    device, out_dir = chosen
    import torch

    dtype = torch.float32 if args.cpu_smoke else getattr(torch, args.dtype)
    cases = smoke_cases() if args.cpu_smoke else preset_cases(args.presets)

    env = environment(device)
    rates = measure_rates(device)
    mode = "forward + backward" if args.backward else "forward"
    notes = (
        f"{mode}, {str(dtype).replace('torch.', '')}; "
        + ("medians of triton.testing.do_bench. " if device == "cuda" else "CPU smoke run: the times mean nothing. ")
        + "x eager = eager's time / "
        "the row's time, x best SDPA = the fastest SDPA backend's time / the row's time (> 1: the row is faster). "
        "rel diff: ||out - triton|| / ||triton||. n/a: the backend refused the shape (reason in the JSON).\n"
        f"Measured rates: {', '.join(f'{k} {v:.0f}' for k, v in rates.items()) or 'none (CPU)'}."
    )
    header = ["shape", "method", "ms", "TFLOP/s", "x eager", "x best SDPA", "floor ms", "rel diff"]

    def cells(r: dict) -> list:
        return [
            Case(**{k: r[k] for k in Case.__dataclass_fields__}).label, r["method"],
            r["error"].split(":")[0] if r["error"] else fmt(r["ms"]), fmt(r["tflops"]), fmt(r.get("x_vs_eager")),
            fmt(r.get("x_vs_best_sdpa")), fmt(r.get("floor_ms")) if r["method"] == "triton" else "",
            fmt(r["rel_diff_vs_triton"], 2),
        ]  # fmt: skip

    name = args.name + ("-backward" if args.backward else "") + ("-cpu-smoke" if args.cpu_smoke else "")
    writer = results_writer(name, env, header, cells, notes, out_dir, dtype=str(dtype), mode=mode, rates=rates)
    print(f"writing {writer.json_path} and {writer.md_path} row by row", flush=True)
    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety
        tqdm = None
    for case in tqdm(cases, desc="attention", unit="shape") if tqdm else cases:
        run_case(case, dtype, device, args.backward, rates, writer)
    path = writer.close()
    print(writer.markdown())
    print(f"wrote {path} and {writer.md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
