"""``d4rt export``: a checkpoint -> encoder.onnx + decoder.onnx + manifest.json, optionally verified against
the eager model in ONNX Runtime.

    d4rt export ckpt/ --out exported/ --verify                         # for ONNX Runtime (fused attention)
    d4rt export ckpt/ --out exported/ --attention standard            # for TensorRT (`d4rt build-engine`)
    d4rt export ckpt/ --out exported/ --precision fp16 --verify
    d4rt export ckpt/ --out exported-int8/ --precision int8 --verify  # int8 for ONNX Runtime (dynamic quantization)
    d4rt export ckpt/ --out exported-qdq/ --precision int8-qdq --calibration clips/ --verify  # int8 for TensorRT
    d4rt export --preset tiny --random-init --out exported/     # a seeded random model (for trying things out)
    d4rt export ckpt/ --out exported/ --aoti                          # + AOTInductor packages (C++ runtime)
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
                        "per-channel weights on every MatMul / Gemm, attention fp32; not for TensorRT); int8-qdq: int8 "
                        "graphs for TensorRT (explicit Q/DQ quantization, calibrated on --calibration). bf16 is not an "
                        "export precision: it runs on the torch backend (`d4rt infer --backend torch --precision bf16`)")
    p.add_argument("--calibration", default=None, metavar="DIR_OR_VIDEO",
                   help="with --precision int8-qdq: a video, a synthetic clip (.npz) or a folder of them to calibrate "
                        "the activations' int8 scales on (clips like the ones you will run)")
    p.add_argument("--calibration-method", choices=("max", "percentile"), default="percentile",
                   help="int8-qdq activation scales: 99.999 %% of |x|'s histogram (default; measured more "
                        "accurate), or the largest |x| seen")
    p.add_argument("--calibration-windows", type=int, default=16,
                   help="int8-qdq: at most this many clip windows of T frames calibrate (round-robin over the files)")
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
    if args.attention == "onnxruntime" and args.precision not in ("fp32", "int8"):
        raise UsageError(f"--attention onnxruntime is exported for fp32 / int8 only; use --attention standard with "
                         f"{args.precision}")
    if args.attention == "standard" and args.precision == "int8":
        raise UsageError("int8 graphs are ONNX Runtime's and keep its fused attention: drop --attention standard "
                         "(for TensorRT export fp16)")
    if args.precision == "int8":
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("--precision int8 needs ONNX Runtime's quantization package: `pip install onnxruntime`")
    if args.precision == "int8-qdq":
        from d4rt.export.int8_qdq import CalibrationError, calibration_sources, import_quantization

        try:
            import_quantization()
            calibration_sources(args.calibration)
        except (ImportError, CalibrationError) as e:
            raise UsageError(str(e)) from None
        if args.calibration_windows < 1:
            raise UsageError(f"--calibration-windows must be >= 1, got {args.calibration_windows}")
    elif args.calibration is not None:
        raise UsageError("--calibration calibrates int8 graphs: use it with --precision int8-qdq")
    if args.aoti:
        from d4rt.runtime.manifest import AOTI_PRECISIONS

        args.aoti_precisions = tuple(p.strip() for p in args.aoti_precisions.split(",") if p.strip())
        bad = [p for p in args.aoti_precisions if p not in AOTI_PRECISIONS]
        if bad or not args.aoti_precisions:
            raise UsageError(f"--aoti-precisions takes a comma list of {', '.join(AOTI_PRECISIONS)}, got {bad}")
        if args.aoti_device not in ("cpu", "cuda") and not args.aoti_device.startswith("cuda:"):
            raise UsageError(f"--aoti-device is cpu or cuda, got {args.aoti_device!r}")
    check_output(args.out, args.overwrite, inputs=(args.checkpoint, args.calibration))


def run(args: argparse.Namespace) -> int:
    import time

    from d4rt.checkpoint import load_or_init
    from d4rt.cli.common import command_line, output_dir
    from d4rt.export.onnx_export import export_onnx
    from d4rt.export.parity import verify_export

    with output_dir(args.out, args.overwrite, inputs=(args.checkpoint, args.calibration),
                    command=command_line(args)) as out_dir:
        model, info = load_or_init(args.checkpoint, out_dir, args.preset, args.random_init, args.seed, args.image_size)
        external = {"auto": None, "yes": True, "no": False}[args.external_data]
        start = time.perf_counter()
        if args.precision == "int8-qdq":
            from d4rt.export.int8_qdq import export_int8_qdq

            manifest = export_int8_qdq(model, out_dir, args.calibration, num_frames=args.frames,
                                       min_frames=args.min_frames, opset=args.opset, checkpoint=info,
                                       external_data=external, method=args.calibration_method,
                                       max_windows=args.calibration_windows)
        else:
            manifest = export_onnx(model, out_dir, precision=args.precision, num_frames=args.frames,
                                   opset=args.opset, min_frames=args.min_frames, checkpoint=info,
                                   external_data=external, attention=args.attention)
        kv = manifest.tensors("encoder", "outputs")[0]
        print(f"exported {manifest.config['name']} ({manifest.precision}, opset {manifest.opset}, T={manifest.frame_range}, "
              f"S={manifest.image_size}) to {args.out} in {time.perf_counter() - start:.1f} s; keys/values {list(kv.shape)} "
              f"{kv.dtype}")
        if args.aoti:
            from d4rt.export.aoti import export_aoti

            export_aoti(model, out_dir, precisions=args.aoti_precisions, device=args.aoti_device)
        if args.verify:
            video = None
            if args.precision == "int8-qdq":  # int8 scales are calibrated on real video: verify on one, not noise
                from d4rt.export.int8_qdq import calibration_sources, calibration_windows

                first = calibration_windows(calibration_sources(args.calibration), manifest.frame_range,
                                            manifest.image_size, 1, manifest.config["tubelet"][0])[0]
                video = (first.video, first.aspect_ratio)
            report = verify_export(model, out_dir, queries=args.queries, raise_on_failure=False, video=video)
            print(report.table())
            return 0 if report.passed else 1
        return 0
