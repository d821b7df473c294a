"""``d4rt serve``: Triton Inference Server with an ``encode`` and a ``query`` model over an export folder.

    d4rt serve exported/ --port 8000        # HTTP 8000, gRPC 8001, metrics 8002 (Triton's ports)
    d4rt serve exported/ --replicas 2 --port 8000   # nginx on 8000 (HTTP) / 8001 (gRPC), replicas on 8010..
    d4rt serve exported/ --replicas 2 --port 8000 --print-config   # the nginx config, for your own nginx

Clients: ``d4rt.serve.Client("127.0.0.1:8000")`` (the runtime's surface) or any Triton client. Readiness:
``GET /v2/models/query/ready`` (``/v2/health/ready`` says 200 before the models load); Prometheus metrics:
``GET :8002/metrics``. Stops on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

from d4rt.cli.common import UsageError, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("export", metavar="EXPORT_DIR", help="an export folder (d4rt export / build-engine)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=positive_int, default=8000, help="HTTP port")
    p.add_argument("--grpc-port", type=positive_int, default=None, help="gRPC port (default: --port + 1)")
    p.add_argument("--metrics-port", type=positive_int, default=None, help="Prometheus metrics port (default: --port + 2)")
    p.add_argument("--backend", default="onnxruntime-cpu",
                   help="runtime backend: tensorrt, onnxruntime-cuda, onnxruntime-cpu, auto, ...")
    p.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime intra-op threads (default: its own choice)")
    p.add_argument("--max-scene-bytes", type=positive_int, default=4 * 2**30,
                   help="bytes of encoded scenes kept (least recently used evicted first)")
    p.add_argument("--max-queries", type=positive_int, default=262_144,
                   help="most queries in one request (a larger one is refused with a message)")
    p.add_argument("--decoder-batch", type=positive_int, default=8192, help="queries per decoder call")
    p.add_argument("--max-delay-ms", type=float, default=2.0,
                   help="Triton's queue delay: how long a query request waits for others to merge with")
    p.add_argument("--max-merged-requests", type=positive_int, default=64,
                   help="most query requests Triton's dynamic batcher merges into one call")
    p.add_argument("--verbose", action="store_true", help="Triton's own log too")
    g = p.add_argument_group("replicas (several servers behind nginx, scene affinity by the client's routing key)")
    g.add_argument("--replicas", type=positive_int, default=None,
                   help="start N server processes (one per GPU, pinned with CUDA_VISIBLE_DEVICES, when there are "
                        "GPUs) and nginx in front of them on --port / --grpc-port")
    g.add_argument("--replica-port", type=positive_int, default=None,
                   help="first replica's HTTP port (default --port + 10); replica i uses it + 3 i (HTTP, gRPC, "
                        "metrics)")
    g.add_argument("--gpus", default=None,
                   help="comma-separated GPU ids to pin replicas to, round robin (default: CUDA_VISIBLE_DEVICES or "
                        "every GPU nvidia-smi lists; none: every replica on the CPU)")
    g.add_argument("--fail-timeout-s", type=float, default=10.0,
                   help="how long nginx leaves out a replica that failed a request before trying it again")
    g.add_argument("--timeout-s", type=float, default=None,
                   help="nginx's proxy time-outs (default: the Client's timeout_s, 300 s)")
    g.add_argument("--log-dir", default=None, help="replica-<i>.log, nginx.log and access.log (default: a temp folder)")
    g.add_argument("--print-config", action="store_true", help="print the nginx config and exit (needs --replicas)")


def validate(args: argparse.Namespace) -> None:
    if not Path(args.export).is_dir():
        raise UsageError(f"{args.export} is not a directory; make an export folder with `d4rt export CKPT --out DIR`")
    if not 0.0 <= args.max_delay_ms <= 1000.0:
        raise UsageError(f"--max-delay-ms must be in [0, 1000], got {args.max_delay_ms}")
    if args.print_config and not args.replicas:
        raise UsageError("--print-config prints the nginx config of --replicas N: add --replicas")
    if args.replicas and not 0 < args.fail_timeout_s <= 3600:
        raise UsageError(f"--fail-timeout-s must be in (0, 3600] seconds, got {args.fail_timeout_s}")
    if args.timeout_s is not None and not args.timeout_s > 0:
        raise UsageError(f"--timeout-s must be a positive number of seconds, got {args.timeout_s}")
    if args.log_dir is not None and Path(args.log_dir).exists() and not Path(args.log_dir).is_dir():
        raise UsageError(f"--log-dir {args.log_dir} is a file; name a folder (logs are appended there)")
    if args.print_config:
        return
    if args.replicas:
        from d4rt.serve.replicas import NGINX

        if not Path(NGINX).exists():
            raise UsageError(f"--replicas runs nginx from {NGINX}: install Debian's package (`apt-get install nginx`)")
    if importlib.util.find_spec("pytriton") is None:
        raise UsageError("d4rt serve needs PyTriton: `pip install -e '.[serve]'` then "
                         "`pip install --no-deps nvidia-pytriton==0.7.0` (docs/serving.md says why --no-deps)")


def replica_set(args: argparse.Namespace):
    """The ReplicaSet of ``--replicas N``: every server flag but the ports goes to each replica."""
    from d4rt.serve.client import DEFAULT_TIMEOUT_S
    from d4rt.serve.replicas import ReplicaSet

    serve_args = ["--backend", args.backend, "--max-scene-bytes", str(args.max_scene_bytes), "--max-queries",
                  str(args.max_queries), "--decoder-batch", str(args.decoder_batch), "--max-delay-ms",
                  str(args.max_delay_ms), "--max-merged-requests", str(args.max_merged_requests)]
    serve_args += ["--threads", str(args.threads)] if args.threads else []
    serve_args += ["--verbose"] if args.verbose else []
    gpus = None if args.gpus is None else [g for g in args.gpus.split(",") if g.strip()]
    return ReplicaSet(args.export, args.replicas, args.port, host=args.host, grpc_port=args.grpc_port,
                      serve_args=serve_args, base_port=args.replica_port, gpus=gpus, log_dir=args.log_dir,
                      timeout_s=args.timeout_s or DEFAULT_TIMEOUT_S, fail_timeout_s=args.fail_timeout_s)


def run(args: argparse.Namespace) -> int:
    if args.print_config:
        print(replica_set(args).config(), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.replicas:
        replica_set(args).start().run()
        return 0
    from d4rt.serve.server import ServeSettings, serve

    settings = ServeSettings(max_scene_bytes=args.max_scene_bytes, max_queries=args.max_queries,
                             decoder_batch=args.decoder_batch, max_delay_s=args.max_delay_ms / 1000.0,
                             max_merged_requests=args.max_merged_requests)
    serve(args.export, host=args.host, http_port=args.port, grpc_port=args.grpc_port or args.port + 1,
          metrics_port=args.metrics_port or args.port + 2, backend=args.backend, threads=args.threads,
          settings=settings, verbose=args.verbose)
    return 0
