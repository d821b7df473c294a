"""Load test of ``d4rt serve`` on loopback: query throughput and latency from concurrent clients against the
in-process runtime on the same batches, a fault run (the server killed mid-load and restarted), a memory run
(more scenes encoded than the store holds) and a replicas run (``d4rt serve --replicas N`` behind nginx, 1 vs 2
replicas, each client with its own scene so that the routing keys spread over the replicas).

    d4rt export checkpoints/tiny-synthetic --out /tmp/tiny-export
    python benchmarks/serve_load.py --export /tmp/tiny-export --json benchmarks/results/serve_load_cpu.json
    python benchmarks/serve_load.py --export /tmp/tiny-export --phases replicas --replicas 1,2 \\
        --json benchmarks/results/serve_replicas_cpu.json

Every loop is bounded (requests per client, seconds per phase); clients time out; the server is a child process
that is stopped (or killed) at the end. Latency: one request = one query batch, end to end on the client.
Throughput: all clients' queries / wall time of the phase. Warm-up requests are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import urllib.request
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from d4rt.benchmarking import median_seconds, run_record
from d4rt.runtime import load
from d4rt.runtime.files import write_text_atomic
from d4rt.serve import Client, ReplicaSet, ServerUnavailableError, UnknownSceneError
from d4rt.serve.process import ServerProcess, free_port_block
from d4rt.serve.scene_store import scene_nbytes

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample_clip.mp4"
PHASES = ("load", "fault", "memory", "replicas")


def clip(rt) -> np.ndarray:
    """The bundled sample clip, frames subsampled to the engines' T (or repeated when it has fewer)."""
    from d4rt.runtime.video import read_video

    frames = read_video(SAMPLE)
    idx = np.linspace(0, len(frames) - 1, rt.num_frames).round().astype(int)
    return frames[idx]


def queries(rng, n: int, T: int):
    return rng.random((n, 2), dtype=np.float32), *rng.integers(0, T, (3, n))


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(a)}


def load_phase(server, scene_frames, batch: int, clients: int, requests: int, warmup: int, protocol: str,
               own_scenes: bool = False) -> dict:
    """``clients`` threads, each with its own Client, sending ``warmup`` + ``requests`` batches on one scene (each
    on a scene of its own with ``own_scenes``: the frames with a little noise of its own). ``server``: anything
    with ``client(protocol, **kwargs)``."""
    shared = None
    if not own_scenes:
        with server.client(protocol, timeout_s=120.0) as c:
            shared = c.encode(scene_frames)
    barrier = threading.Barrier(clients, timeout=300)

    spans = []

    def work(seed: int) -> list[float]:
        rng = np.random.default_rng(seed)
        lat = []
        with server.client(protocol, timeout_s=120.0) as c:
            scene = shared
            if scene is None:
                noisy = scene_frames.astype(np.int16) + rng.integers(-8, 9, scene_frames.shape)
                scene = c.encode(np.clip(noisy, 0, 255).astype(np.uint8))
            q = queries(rng, batch, c.num_frames)
            for _ in range(warmup):
                c.query(scene, *q, batch_size=batch)
            barrier.wait()
            start = time.perf_counter()
            for _ in range(requests):
                t0 = time.perf_counter()
                c.query(scene, *q, batch_size=batch)
                lat.append((time.perf_counter() - t0) * 1e3)
            spans.append((start, time.perf_counter()))
        return lat

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(work, 1000 + i) for i in range(clients)]
        lats = [f.result(timeout=600) for f in futures]
    wall = max(e for _, e in spans) - min(s for s, _ in spans)  # from the first timed request to the last answer
    timed = sum(lats, [])
    return {"clients": clients, "batch": batch, "protocol": protocol, "requests": len(timed),
            "queries_per_s": clients * requests * batch / wall, **percentiles(timed)}


class _Front:
    """nginx in front of a ReplicaSet, with ServerProcess's ``client`` (HTTP only)."""

    def __init__(self, replica_set: ReplicaSet):
        self.replica_set = replica_set

    def client(self, protocol: str = "http", **kwargs) -> Client:
        assert protocol == "http"
        return Client(f"127.0.0.1:{self.replica_set.port}", **kwargs)

    def query_requests(self) -> list[int]:
        """Successful query requests of each replica since its start (its Prometheus metrics)."""
        out = []
        for r in self.replica_set.replicas:
            text = urllib.request.urlopen(f"http://127.0.0.1:{r.metrics}/metrics", timeout=10).read().decode()
            m = re.search(r'nv_inference_request_success\{model="query",version="1"\} (\d+)', text)
            out.append(int(m.group(1)) if m else 0)
        return out


def replicas_runs(args, record, frames, logdir, batches, client_counts, replica_counts, save) -> None:
    """``d4rt serve --replicas N`` (a ReplicaSet and nginx) for each N; every client encodes a scene of its own."""
    record["replicas"] = []
    print(f"{'replicas':>8s} {'clients':>7s} {'batch':>6s} {'p50 ms':>9s} {'p99 ms':>9s} {'queries/s':>11s}  "
          f"query requests per replica", flush=True)
    for n in replica_counts:
        base = free_port_block(2 + 3 * n)
        rs = ReplicaSet(args.export, n, base, base_port=base + 2,
                        serve_args=["--threads", str(args.threads), "--backend", args.backend],
                        log_dir=logdir / f"replicas-{n}", gpus=None if args.gpus is None else
                        [g for g in args.gpus.split(",") if g])
        with_gpus = [r.gpu for r in rs.replicas]
        rs.start()
        try:
            front = _Front(rs)
            for b in batches:
                for c in client_counts:
                    before = front.query_requests()
                    row = load_phase(front, frames, b, c, args.requests, args.warmup, "http", own_scenes=True)
                    row.update(replicas=n, gpus=with_gpus, backend=args.backend,
                               query_requests_per_replica=[a - z for a, z in zip(front.query_requests(), before)])
                    record["replicas"].append(row)
                    print(f"{n:8d} {c:7d} {b:6d} {row['p50_ms']:9.1f} {row['p99_ms']:9.1f} "
                          f"{row['queries_per_s']:11,.0f}  {row['query_requests_per_replica']}", flush=True)
                    save()
        finally:
            rs.stop()


def fault_run(server: ServerProcess, frames, batch: int, clients: int, seconds: float) -> dict:
    """Clients query in a loop; the server is SIGKILLed mid-load and restarted; clients re-encode on
    UnknownSceneError and retry on ServerUnavailableError. Bounded by ``seconds`` per client."""
    counts = {"ok": 0, "unavailable": 0, "unknown_scene": 0, "ok_after_restart": 0}
    lock = threading.Lock()
    restarted = threading.Event()
    first_error_s, recovered_s = [], []
    t_start = time.perf_counter()

    def work(seed: int):
        rng = np.random.default_rng(seed)
        q = queries(rng, batch, frames.shape[0])
        client, scene = None, None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if client is None:
                    client = server.client(timeout_s=10.0, ready_timeout_s=2.0)
                if scene is None:
                    scene = client.encode(frames)
                client.query(scene, *q, batch_size=batch)
                with lock:
                    counts["ok"] += 1
                    if restarted.is_set():
                        counts["ok_after_restart"] += 1
                        if not recovered_s:
                            recovered_s.append(time.perf_counter() - t_start)
            except UnknownSceneError:
                with lock:
                    counts["unknown_scene"] += 1
                scene = None
            except ServerUnavailableError:
                with lock:
                    counts["unavailable"] += 1
                    if not first_error_s:
                        first_error_s.append(time.perf_counter() - t_start)
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.2)
        if client is not None:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(work, 2000 + i) for i in range(clients)]
        time.sleep(seconds / 4)
        kill_at = time.perf_counter() - t_start
        server.kill()
        server.start()
        restart_done = time.perf_counter() - t_start
        restarted.set()
        for f in futures:
            f.result(timeout=seconds + 120)  # a hung client fails the run here
    return {"clients": clients, "batch": batch, "killed_at_s": kill_at, "restarted_at_s": restart_done,
            "first_error_at_s": first_error_s[0] if first_error_s else None,
            "first_success_after_restart_at_s": recovered_s[0] if recovered_s else None, **counts,
            "all_clients_finished": True}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_run(engines: str, log: Path, local, frames, scenes_held: int, scenes_encoded: int) -> dict:
    """A server whose store holds ``scenes_held`` scenes; encode ``scenes_encoded``; the server's RSS after each."""
    one = scene_nbytes(local, local.encode(frames))
    bound = int(scenes_held * one * 1.01)
    rng = np.random.default_rng(3)
    with ServerProcess(engines, log, ["--max-scene-bytes", str(bound), "--threads", "2"]) as server:
        with server.client(timeout_s=120.0) as c:
            uv = rng.random((256, 2), dtype=np.float32)
            c.query(c.encode(frames), uv, 0, 0, 0)  # warm both models
            base = rss_mib(server.pid)
            rss = []
            for i in range(scenes_encoded):
                noisy = np.clip(frames.astype(np.int16) + rng.integers(-8, 9, frames.shape), 0, 255).astype(np.uint8)
                c.query(c.encode(noisy), uv, 0, 0, 0)
                rss.append(rss_mib(server.pid))
    return {"scene_mib": one / 2**20, "store_bound_mib": bound / 2**20, "scenes_held": scenes_held,
            "scenes_encoded": scenes_encoded, "rss_before_mib": base, "rss_after_each_mib": rss,
            "rss_growth_max_mib": max(rss) - base}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", required=True, help="an export folder (d4rt export)")
    ap.add_argument("--batches", default="1024,8192", help="queries per request")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients")
    ap.add_argument("--requests", type=int, default=8, help="timed requests per client and phase")
    ap.add_argument("--warmup", type=int, default=2, help="untimed requests per client first")
    ap.add_argument("--repeats", type=int, default=8, help="in-process timed runs (median)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, in-process and in the server")
    ap.add_argument("--fault-seconds", type=float, default=40.0, help="length of the fault run per client")
    ap.add_argument("--json", default="benchmarks/results/serve_load_cpu.json", help="results file")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="which runs; a subset updates those parts of an existing --json file")
    ap.add_argument("--replicas", default="1,2", help="replica counts of the replicas run")
    ap.add_argument("--backend", default="onnxruntime-cpu",
                    help="replicas run: the replicas' runtime backend (tensorrt, onnxruntime-cuda on a GPU machine)")
    ap.add_argument("--gpus", default=None,
                    help="replicas run: GPU ids to pin replicas to (default: every GPU; '' for the CPU only)")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= set(PHASES):
        ap.error(f"--phases takes {', '.join(PHASES)}; got {args.phases}")
    batches = [int(b) for b in args.batches.split(",")]
    client_counts = [int(c) for c in args.clients.split(",")]

    local = load(args.export, backend="onnxruntime-cpu", threads=args.threads)
    frames = clip(local)
    record = {**run_record(), "export": str(args.export), "num_frames": local.num_frames,
              "image_size": local.image_size, "threads": args.threads, "loadavg_start": os.getloadavg(),
              }
    out = Path(args.json)
    if phases != set(PHASES) and out.is_file():  # keep the other runs' results, say when
        record = {**json.loads(out.read_text()), **{f"{k}_{'+'.join(sorted(phases))}": v for k, v in record.items()
                                                   if k in ("date", "commit", "command", "loadavg_start")}}

    def save():
        write_text_atomic(out, json.dumps(record, indent=1))

    scene = local.encode(frames)
    rng = np.random.default_rng(0)
    logdir = Path(tempfile.mkdtemp(prefix="d4rt-serve-load-"))
    if "load" in phases:
        load_runs(args, record, local, scene, frames, rng, logdir, batches, client_counts, save)
    if "fault" in phases:
        with ServerProcess(args.export, logdir / "fault.log", ["--threads", str(args.threads)]) as server:
            record["fault"] = fault_run(server, frames, 1024, 4, args.fault_seconds)
        print("fault run:", json.dumps(record["fault"]), flush=True)
        save()
    if "memory" in phases:
        record["memory"] = memory_run(args.export, logdir / "memory.log", local, frames, 4, 16)
        print("memory run:", json.dumps({k: v for k, v in record["memory"].items() if k != "rss_after_each_mib"}),
              flush=True)
    if "replicas" in phases:
        replicas_runs(args, record, frames, logdir, batches, client_counts,
                      [int(n) for n in args.replicas.split(",")], save)
    record["loadavg_end"] = os.getloadavg()
    save()
    print(f"wrote {out}")
    return 0


def load_runs(args, record, local, scene, frames, rng, logdir, batches, client_counts, save) -> None:
    record["in_process"], record["served"] = [], []
    print(f"{'path':12s} {'clients':>7s} {'batch':>6s} {'p50 ms':>9s} {'p99 ms':>9s} {'queries/s':>11s}", flush=True)
    for b in batches:
        q = queries(rng, b, local.num_frames)
        s = median_seconds(lambda: local.query(scene, *q, batch_size=b), args.repeats, args.warmup)
        record["in_process"].append({"batch": b, "median_ms": s * 1e3, "queries_per_s": b / s})
        print(f"{'in-process':12s} {1:7d} {b:6d} {s * 1e3:9.1f} {'':9s} {b / s:11,.0f}", flush=True)
        save()
    with ServerProcess(args.export, logdir / "server.log", ["--threads", str(args.threads)]) as server:
        for b in batches:
            for c in client_counts:
                row = load_phase(server, frames, b, c, args.requests, args.warmup, "http")
                record["served"].append(row)
                print(f"{'served http':12s} {c:7d} {b:6d} {row['p50_ms']:9.1f} {row['p99_ms']:9.1f} "
                      f"{row['queries_per_s']:11,.0f}", flush=True)
                save()
    log = (logdir / "server.log").read_text(errors="replace")
    record["server_merging"] = [line.split(" INFO ")[-1] for line in log.splitlines() if "decoder calls" in line]
    save()


if __name__ == "__main__":
    sys.exit(main())
