"""``d4rt export``: a checkpoint -> encoder.onnx + decoder.onnx + manifest.json, optionally verified against
the eager model in ONNX Runtime.

    d4rt export ckpt/ --out export/ --verify                         # for ONNX Runtime (fused attention)
    d4rt export ckpt/ --out export/ --attention standard            # for TensorRT (`d4rt build-engine`)
    d4rt export ckpt/ --out export/ --precision fp16 --verify
    d4rt export ckpt/ --out export-int8/ --precision int8 --verify  # int8 for ONNX Runtime (dynamic quantization)
    d4rt export --preset tiny --random-init --out export/     # a seeded random model (for trying things out)
    d4rt export ckpt/ --out export/ --aoti                          # + AOTInductor packages (C++ runtime)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a save_pretrained directory (config.json + model.safetensors)")
    from d4rt.cli.common import add_output_arguments

    add_output_arguments(p, "output directory for the graphs and manifest.json")
    from d4rt.runtime.manifest import PRECISIONS

    p.add_argument("--precision", default="fp32", metavar="{" + ",".join(PRECISIONS) + "}",
                   help="fp32; fp16 (for TensorRT); int8: dynamically quantized graphs for ONNX Runtime (int8 "
                        "per-channel weights on every MatMul / Gemm, attention fp32; not for TensorRT). bf16 is not an "
                        "export precision: it runs on the torch backend (`d4rt infer --backend torch --precision bf16`)")
    p.add_argument("--frames", type=int, default=None, help="the most frames a clip may have, T (default: the "
                   "model's); the graphs take any even count from --min-frames to T, longer videos run in windows")
    p.add_argument("--min-frames", type=int, default=None, help="the fewest frames a clip may have (default: the "
                   "tubelet's 2; equal to --frames for graphs of one fixed length)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    p.add_argument("--attention", choices=("onnxruntime", "standard"), default=None,
                   help="how attention is written: 'onnxruntime' = one fused com.microsoft.MultiHeadAttention node "
                        "(fastest on ONNX Runtime; TensorRT refuses it), 'standard' = plain ONNX ops (for TensorRT / "
                        "build-engine). Default: onnxruntime for fp32, standard for fp16")
    p.add_argument("--verify", action="store_true", help="check both graphs in ONNX Runtime against eager PyTorch")
    p.add_argument("--queries", type=int, default=2048, help="queries used by --verify")
    p.add_argument("--external-data", choices=("auto", "yes", "no"), default="auto",
                   help="weights in *.onnx.data beside the graphs (auto: when above ~1.8 GB)")
    p.add_argument("--aoti", action="store_true", help="also compile AOTInductor packages (encoder.pt2, decoder.pt2 "
                   "and their bf16 twins) for this machine, for the C++ runtime (docs/cpp.md) and backend 'aoti'")
    p.add_argument("--aoti-precisions", default="fp32,bf16", help="with --aoti: comma list of fp32, bf16")
    p.add_argument("--aoti-device", default="cpu", help="with --aoti: cpu, or cuda (Triton attention kernels "
                   "inside; needs a CUDA torch on the GPU that will run them)")
    p.add_argument("--preset", default=None, help="with --random-init: the model preset (tiny, base, g)")
    p.add_argument("--random-init", action="store_true", help="export a seeded random model instead of a checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    p.add_argument("--image-size", type=int, default=None, help="with --random-init: input size S (default: preset's)")


def validate(args: argparse.Namespace) -> None:
    from d4rt.cli.common import UsageError, check_output

    if args.random_init == bool(args.checkpoint):
        raise UsageError("give either a checkpoint directory or --random-init --preset NAME (not both, not neither)")
    if args.random_init and not args.preset:
        raise UsageError("--random-init needs --preset (tiny, base or g)")
    from d4rt.runtime.manifest import PRECISIONS

    if args.precision == "bf16":
        raise UsageError("bf16 is not an export precision: it runs the checkpoint on the torch backend (`d4rt infer "
                         "--backend torch --precision bf16`); for ONNX Runtime export --precision int8")
    if args.precision not in PRECISIONS:
        raise UsageError(f"--precision {args.precision!r} is not one of {', '.join(PRECISIONS)}")
    if args.attention == "onnxruntime" and args.precision == "fp16":
        raise UsageError("--attention onnxruntime is exported for fp32 / int8 only; use --attention standard with fp16")
    if args.attention == "standard" and args.precision == "int8":
        raise UsageError("int8 graphs are ONNX Runtime's and keep its fused attention: drop --attention standard "
                         "(for TensorRT export fp16)")
    if args.precision == "int8":
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("--precision int8 needs ONNX Runtime's quantization package: `pip install onnxruntime`")
    if args.aoti:
        from d4rt.runtime.manifest import AOTI_PRECISIONS

        args.aoti_precisions = tuple(p.strip() for p in args.aoti_precisions.split(",") if p.strip())
        bad = [p for p in args.aoti_precisions if p not in AOTI_PRECISIONS]
        if bad or not args.aoti_precisions:
            raise UsageError(f"--aoti-precisions takes a comma list of {', '.join(AOTI_PRECISIONS)}, got {bad}")
        if args.aoti_device not in ("cpu", "cuda") and not args.aoti_device.startswith("cuda:"):
            raise UsageError(f"--aoti-device is cpu or cuda, got {args.aoti_device!r}")
    check_output(args.out, args.overwrite)


def run(args: argparse.Namespace) -> int:
    import time

    from d4rt.checkpoint import load_or_init
    from d4rt.cli.common import output_dir
    from d4rt.export.onnx_export import export_onnx
    from d4rt.export.parity import verify_export

    with output_dir(args.out, args.overwrite) as out_dir:
        model, info = load_or_init(args.checkpoint, out_dir, args.preset, args.random_init, args.seed, args.image_size)
        external = {"auto": None, "yes": True, "no": False}[args.external_data]
        start = time.perf_counter()
        manifest = export_onnx(model, out_dir, precision=args.precision, num_frames=args.frames, opset=args.opset,
                               min_frames=args.min_frames, checkpoint=info, external_data=external,
                               attention=args.attention)
        kv = manifest.tensors("encoder", "outputs")[0]
        print(f"exported {manifest.config['name']} ({manifest.precision}, opset {manifest.opset}, T={manifest.frame_range}, "
              f"S={manifest.image_size}) to {args.out} in {time.perf_counter() - start:.1f} s; keys/values {list(kv.shape)} "
              f"{kv.dtype}")
        if args.aoti:
            from d4rt.export.aoti import export_aoti

            export_aoti(model, out_dir, precisions=args.aoti_precisions, device=args.aoti_device)
        if args.verify:
            report = verify_export(model, out_dir, queries=args.queries, raise_on_failure=False)
            print(report.table())
            return 0 if report.passed else 1
        return 0
