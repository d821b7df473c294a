"""``d4rt serve``: Triton Inference Server with an ``encode`` and a ``query`` model over an export folder.

    d4rt serve export/ --port 8000        # HTTP 8000, gRPC 8001, metrics 8002 (Triton's ports)

Clients: ``d4rt.serve.Client("127.0.0.1:8000")`` (the runtime's surface) or any Triton client. Readiness:
``GET /v2/health/ready``; Prometheus metrics: ``GET :8002/metrics``. Stops on Ctrl-C / SIGTERM.
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


def validate(args: argparse.Namespace) -> None:
    if not Path(args.export).is_dir():
        raise UsageError(f"{args.export} is not a directory; make an export folder with `d4rt export CKPT --out DIR`")
    if not 0.0 <= args.max_delay_ms <= 1000.0:
        raise UsageError(f"--max-delay-ms must be in [0, 1000], got {args.max_delay_ms}")
    if importlib.util.find_spec("pytriton") is None:
        raise UsageError("d4rt serve needs PyTriton: `pip install -e '.[serve]'` then "
                         "`pip install --no-deps nvidia-pytriton==0.7.0` (docs/serving.md says why --no-deps)")


def run(args: argparse.Namespace) -> int:
    from d4rt.serve.server import ServeSettings, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ServeSettings(max_scene_bytes=args.max_scene_bytes, max_queries=args.max_queries,
                             decoder_batch=args.decoder_batch, max_delay_s=args.max_delay_ms / 1000.0,
                             max_merged_requests=args.max_merged_requests)
    serve(args.export, host=args.host, http_port=args.port, grpc_port=args.grpc_port or args.port + 1,
          metrics_port=args.metrics_port or args.port + 2, backend=args.backend, threads=args.threads,
          settings=settings, verbose=args.verbose)
    return 0
