"""Export the full-size g model (1.16 B parameters, random weights) with ``d4rt export`` and measure it.

Runs ``d4rt export --preset g --random-init`` in a child process per precision, exactly as a user would, while
sampling /proc/<pid>/status; the child is stopped when its own memory (RssAnon) passes ``--rss-limit-gb``.
Records wall time, peak memory, every written file's size and the exit status, prints a table and writes
benchmarks/results/<date>-cpu-export-g.json (runs of the same day are merged by precision, frames and verify;
each keeps its own date, commit and command line).

    python benchmarks/export_g.py --workdir /tmp/g_export [--precision fp16 fp32] [--frames 48] [--verify-queries 64]

Needs, per run, ~4.7 GB of disk for the random checkpoint and 2.3 (fp16) or 4.7 (fp32) GB for the graphs; the
output directory is deleted after measuring unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from convert_opend4rt import status_kb

REPO = Path(__file__).resolve().parents[1]


def run_capped(cmd: list[str], log: Path, rss_limit_gb: float) -> dict:
    """Run ``cmd`` (output to ``log``), stop it if its RssAnon passes the limit; wall time, peaks, exit code."""
    start = time.perf_counter()
    peak = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    stopped = False
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        while proc.poll() is None:
            for k, v in status_kb(proc.pid).items():
                peak[k] = max(peak[k], v)
            if peak["RssAnon"] * 1024 > rss_limit_gb * 1e9 and not stopped:
                proc.kill()  # the child we started, by its own handle
                stopped = True
            time.sleep(0.05)
    result = {"exit_code": proc.returncode, "wall_s": time.perf_counter() - start,
              **{f"peak_{k}_GB": v * 1024 / 1e9 for k, v in peak.items()}}
    if stopped:
        result["stopped"] = f"RssAnon passed {rss_limit_gb} GB"
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--precision", nargs="+", default=["fp16", "fp32"], choices=("fp16", "fp32"))
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--verify-queries", type=int, default=0, help="run --verify with this many queries (0: no verify)")
    p.add_argument("--rss-limit-gb", type=float, default=16.0, help="stop an export whose own memory passes this")
    p.add_argument("--keep", action="store_true", help="keep the exported directories")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from d4rt.benchmarking import run_record

    record = run_record()

    runs = []
    for precision in args.precision:
        out_dir = args.workdir / f"g-{precision}-T{args.frames}"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, "-m", "d4rt.cli", "export", "--preset", "g", "--random-init", "--out", str(out_dir),
               "--precision", precision, "--frames", str(args.frames)]
        if args.verify_queries:
            cmd += ["--verify", "--queries", str(args.verify_queries)]
        print(f"running: d4rt {' '.join(cmd[3:])}", flush=True)
        log = args.workdir / f"{out_dir.name}.log"
        run = {"precision": precision, "frames": args.frames, "verify_queries": args.verify_queries,
               "date": record["date"], "commit": record["commit"], "script": record["command"],
               "command": "d4rt " + " ".join(cmd[3:]).replace(str(args.workdir), "WORKDIR"),
               **run_capped(cmd, log, args.rss_limit_gb)}
        files = sorted(f for f in out_dir.rglob("*") if f.is_file()) if out_dir.is_dir() else []
        run["files_GB"] = {str(f.relative_to(out_dir)): round(f.stat().st_size / 1e9, 4) for f in files}
        manifest = out_dir / "manifest.json"
        if manifest.is_file():
            written = json.loads(manifest.read_text())
            run["manifest_external_data"] = {g: [d["file"] for d in e["external_data"]]
                                             for g, e in written["graphs"].items()}
            if written.get("parity"):
                run["parity_worst"] = written["parity"]["worst"]
        run["log_tail"] = log.read_text().splitlines()[-6:]
        print(json.dumps(run, indent=2), flush=True)
        runs.append(run)
        save(record, runs)
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)

    result, out = save(record, runs)
    header = ("precision", "T", "verify", "exit", "wall s", "RssAnon GB", "graphs GB")
    print("\n{:9s} {:>3s} {:>6s} {:>4s} {:>8s} {:>10s} {:>9s}".format(*header))
    for r in result["runs"]:
        graphs = sum(v for k, v in r["files_GB"].items() if not k.startswith("checkpoint"))
        print(f"{r['precision']:9s} {r['frames']:3d} {r['verify_queries']:6d} {r['exit_code']:4d} {r['wall_s']:8.1f} "
              f"{r['peak_RssAnon_GB']:10.2f} {graphs:9.3f}")
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


def save(record: dict, runs: list[dict]) -> tuple[dict, Path]:
    """Merge ``runs`` into the day's results file (a run replaces an earlier one of the same precision, frames and
    verify), written after every run so a time-out keeps the runs that finished."""
    from d4rt.runtime.files import write_text_atomic

    out = REPO / "benchmarks" / "results" / f"{record['date'][:10]}-cpu-export-g.json"
    key = lambda r: (r["precision"], r["frames"], r["verify_queries"])  # noqa: E731
    earlier = json.loads(out.read_text())["runs"] if out.is_file() else []
    merged = {key(r): r for r in [*earlier, *runs]}
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    result = {  # each run records its own date, commit and script command line
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {ram_gb:.0f} GB RAM, "
                   "shared with other jobs",
        "model": "g preset, random weights (1,162,494,733 parameters at 48 frames)",
        "runs": list(merged.values()),
    }
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result, out

if __name__ == "__main__":
    raise SystemExit(main())
