"""Compile every attention kernel and block-size config for a GPU architecture, without a GPU.

Triton ships ptxas, so a kernel can be compiled to a cubin for, say, sm_90 (H100 / H200) on any machine. This script
records the exact launches ``local_attention`` / ``cross_attention`` and their backward would make for the D4RT
preset shapes (on meta tensors: nothing runs), compiles each kernel with each of its autotune configs, and prints
registers and stack / local memory (spills) per thread and shared memory per program, for every config the autotuner
would try (after its pruning). It fails (exit 1) if a kernel does not
compile or a config needs more shared memory than the architecture has; the autotuner would skip such a config,
but a config that can never run should not be in the list.

    python benchmarks/compile_check.py                 # sm_90, bf16, head dims 64 / 80 / 88
    python benchmarks/compile_check.py --arch 80 --dtype float16 --head-dims 64

It must run without TRITON_INTERPRET (compiled kernels, not the interpreter).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

SHARED_MEMORY = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376}  # bytes per block


def _record_launches(dtype, head_dim: int, window: int, n_local: int, n_queries: int, n_keys: int):
    """Run the launch code on meta tensors with the kernels replaced by recorders -> [(kernel, args, kwargs)]."""
    import torch

    from d4rt.kernels import backward, forward, ops

    launches = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.kernel, args, kwargs))

    names = {forward: ["_attention_forward_kernel", "_combine_splits_kernel"],
             backward: ["_delta_kernel", "_dkdv_kernel", "_dq_kernel"]}  # fmt: skip
    saved = {(m, n): getattr(m, n) for m, ns in names.items() for n in ns}
    for (module, name), kernel in saved.items():
        setattr(module, name, Recorder(kernel))
    try:
        meta = dict(dtype=dtype, device="meta")

        def alloc(shape, dtype, device):
            return torch.empty(shape, dtype=dtype, device="meta")

        B, H = 1, 16
        for Nq, Nk, groups, splits in ((n_local, n_local, n_local // window, 1), (n_queries, n_keys, 1, 1),
                                       (16, n_keys, 1, 4)):  # fmt: skip
            q = torch.empty(B, Nq, 3, H, head_dim, **meta)[:, :, 0].transpose(1, 2)  # a packed-qkv view
            k = v = torch.empty(B, H, Nk, head_dim, **meta)
            out = ops._heads_last(B, Nq, H, head_dim, q, alloc)
            lse = torch.empty(B, H, Nq, dtype=torch.float32, device="meta")
            forward.attention_forward(q, k, v, groups, 0.1, splits, 128 * triton_cdiv(Nk, 128 * splits), out, lse,
                                      alloc=alloc)  # fmt: skip
            if splits == 1:
                grads = [ops._heads_last(B, t.shape[2], H, head_dim, t, alloc) for t in (q, k, v)]
                backward.attention_backward(out, q, k, v, out, lse, groups, 0.1, *grads, alloc=alloc)
    finally:
        for (module, name), kernel in saved.items():
            setattr(module, name, kernel)
    return launches


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


_TYPE = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def _compile(jit_fn, args, kwargs, config_kwargs, num_warps, num_stages, arch):
    """Compile one launch the way the JIT would specialise it (ints equal to 1 become constants, pointers and ints
    divisible by 16 get the divisibility hint)."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    values = dict(zip(jit_fn.arg_names, args)) | kwargs | config_kwargs
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(jit_fn.arg_names, jit_fn.params)):
        value = values[name]
        if param.is_constexpr or (isinstance(value, int) and not isinstance(value, bool) and value == 1):
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + _TYPE[str(value.dtype)]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{name}: cannot type {value!r}")
    src = ASTSource(fn=jit_fn, signature=signature, constexprs=constexprs, attrs=attrs)
    target = GPUTarget("cuda", arch, 32)
    options = make_backend(target).parse_options({"num_warps": num_warps, "num_stages": num_stages})
    return triton.compile(src, target=target, options=options.__dict__)


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack + local bytes per thread: spills) of a cubin, from the bundled cuobjdump."""
    import re
    import subprocess
    import tempfile

    from triton import knobs

    cuobjdump = knobs.nvidia.cuobjdump.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", text)
    spilled = sum(int(m) for m in re.findall(r"(?:STACK|LOCAL):(\d+)", text))
    return int(regs.group(1)) if regs else -1, spilled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = H100 / H200)")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 80, 88])
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("compile_check: unset TRITON_INTERPRET (it compiles kernels; the interpreter does not)")
        return 2
    import torch
    from triton.runtime.autotuner import Autotuner

    dtype = getattr(torch, args.dtype)
    limit = SHARED_MEMORY.get(args.arch)
    failures = 0
    print(f"{'kernel':<28} {'D':>4} {'config':<26} {'regs':>5} {'spill':>6} {'smem':>7} {'s':>5}")
    for head_dim in args.head_dims:
        seen = set()
        for kernel, call_args, call_kwargs in _record_launches(dtype, head_dim, 256, 2 * 256, 4096, 6145):
            jit_fn = kernel.fn if isinstance(kernel, Autotuner) else kernel
            configs = [None]
            if isinstance(kernel, Autotuner):  # the configs the autotuner would try for this launch
                configs = kernel.configs
                if kernel.early_config_prune:
                    configs = kernel.early_config_prune(configs, dict(zip(jit_fn.arg_names, call_args)), **call_kwargs)
            for config in configs:
                extra = dict(config.kwargs) if config else {}
                warps, stages = (config.num_warps, config.num_stages) if config else (4, 3)
                label = ",".join(f"{v}" for v in extra.values()) + f" w{warps} s{stages}"
                key = (jit_fn.__name__, label, str([call_kwargs.get(n) for n in ("D0", "D1")]))
                if key in seen:
                    continue
                seen.add(key)
                start = time.perf_counter()
                try:
                    compiled = _compile(jit_fn, call_args, call_kwargs, extra, warps, stages, args.arch)
                except Exception as e:  # a compile error is what this script exists to find
                    failures += 1
                    print(f"{jit_fn.__name__:<28} {head_dim:>4} {label:<26} FAILED: {type(e).__name__}: {e}")
                    continue
                smem = compiled.metadata.shared
                regs, spills = _resource_usage(compiled.asm["cubin"])
                too_big = limit is not None and smem > limit
                failures += too_big
                print(
                    f"{jit_fn.__name__:<28} {head_dim:>4} {label:<26} {regs:>5} {spills:>6} "
                    f"{smem:>7} {time.perf_counter() - start:>5.1f}" + ("  > shared memory" if too_big else "")
                )
    print("compile_check:", "all kernels compile" if not failures else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
