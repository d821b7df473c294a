"""Convert a full-size OpenD4RT checkpoint and measure time and memory (random weights, real names and shapes).

Writes a random g checkpoint with the release's exact tensor names and shapes (tests/data/opend4rt manifest;
wrapped as {"state_dict": {"module." + name: tensor}}), runs ``d4rt convert-opend4rt`` on it in a child process
while sampling /proc/<pid>/status, and with ``--run`` checks that the converted directory and the checkpoint
give the same outputs on a short clip. Prints a table and writes JSON to benchmarks/results/.

    python benchmarks/convert_opend4rt.py --workdir /tmp/opend4rt_bench [--frames 32] [--run]

Peak anonymous memory (RssAnon) is what the process itself holds; file-backed pages (RssFile: the memory-mapped
checkpoint) are page cache the kernel can drop. Needs ~2 x 4.65 GB of disk in --workdir.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = {32: "OpenD4RT_32CLIP_9Dataset_NoAUG.manifest.json", 48: "OpenD4RT_48CLIP_9Mix_NoCropAUG.manifest.json"}


def write_random_checkpoint(frames: int, path: Path) -> int:
    import math

    import torch

    manifest = json.loads((REPO / "tests" / "data" / "opend4rt" / MANIFESTS[frames]).read_text())
    state = {}
    for name, entry in manifest["state_dict"].items():
        shape = entry["shape"]
        std = math.prod(shape[1:]) ** -0.5 if len(shape) > 1 else 0.02  # weights N(0, 1/fan_in), vectors small
        offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0  # LayerNorm scales near 1
        state[f"module.{name}"] = torch.empty(shape).normal_(offset, std)
    torch.save({"epoch": 0, "state_dict": state}, path)
    return path.stat().st_size


def status_kb(pid: int) -> dict[str, int]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return fields


def run_measured(cmd: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    while proc.poll() is None:
        for k, v in status_kb(proc.pid).items():
            peak[k] = max(peak[k], v)
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return {"wall_s": time.perf_counter() - start, **{f"peak_{k}_GB": v * 1024 / 1e9 for k, v in peak.items()}}


def same_outputs(ckpt: Path, out_dir: Path) -> dict[str, float]:
    """Outputs of the checkpoint (D4RT.from_opend4rt) and of the converted dir agree bit for bit on a short clip."""
    import torch

    from d4rt import D4RT

    torch.manual_seed(0)
    video = torch.rand(1, 2, 3, 256, 256)
    uv, t = torch.rand(1, 256, 2), torch.randint(0, 2, (3, 1, 256))
    outputs, times = [], []
    for load in (lambda: D4RT.from_opend4rt(ckpt), lambda: D4RT.from_pretrained(out_dir)):
        model = load()
        start = time.perf_counter()
        with torch.no_grad():
            outputs.append(model(video, uv, t[0], t[1], t[2], aspect_ratio=16 / 9))
        times.append(time.perf_counter() - start)
        del model
    diff = max((outputs[0][k] - outputs[1][k]).abs().max().item() for k in outputs[0])
    return {"max_abs_diff": diff, "forward_2_frames_256_queries_s": min(times)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--frames", type=int, default=48, choices=sorted(MANIFESTS))
    p.add_argument("--run", action="store_true", help="also compare outputs of the checkpoint and the converted dir")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt, out_dir = args.workdir / "opend4rt.ckpt", args.workdir / "converted"

    start = time.perf_counter()
    size = write_random_checkpoint(args.frames, ckpt)
    print(f"wrote a random {args.frames}-frame checkpoint: {size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s")
    measured = run_measured([sys.executable, "-m", "d4rt.cli", "convert-opend4rt", str(ckpt), str(out_dir)])
    files = sorted(out_dir.iterdir())
    from d4rt.benchmarking import run_record

    result = {
        **run_record(),
        "frames": args.frames,
        "checkpoint_GB": size / 1e9,
        "converted_files": [f.name for f in files],
        "converted_GB": sum(f.stat().st_size for f in files) / 1e9,
        **measured,
    }
    if args.run:
        result.update(same_outputs(ckpt, out_dir))
    print(f"\n{'quantity':34s} value")
    for k, v in result.items():
        print(f"{k:34s} {v:.3f}" if isinstance(v, float) else f"{k:34s} {v}")
    from d4rt.runtime.files import write_text_atomic

    out = REPO / "benchmarks" / "results" / f"convert_opend4rt_{args.frames}f.json"
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
