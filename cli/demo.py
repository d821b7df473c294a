"""``d4rt demo`` (``make demo``): the package's main job end to end.

checkpoint -> ONNX graphs (+ manifest) -> parity against eager PyTorch in ONNX Runtime -> a TensorRT engine when
TensorRT is installed -> a clip through the best backend present -> depth maps, point cloud, camera trajectory,
tracks and a preview in ``demo_out/results`` -> speed beside eager PyTorch.

Uses the bundled checkpoint ``checkpoints/tiny-synthetic`` when it exists, else a seeded random tiny model (its
outputs have the right shapes and no meaning), and ``assets/sample_clip.mp4`` when it exists, else a generated
moving-texture clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BUNDLED_CHECKPOINT = Path("checkpoints/tiny-synthetic")
SAMPLE_CLIP = Path("assets/sample_clip.mp4")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=str(BUNDLED_CHECKPOINT), help="save_pretrained directory (when present)")
    p.add_argument("--clip", default=str(SAMPLE_CLIP), help="video to run (when present; else a generated clip)")
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--backend", default="auto", help="runtime backend (default: the best one present)")
    p.add_argument("--depth-size", type=int, default=64, help="depth map resolution (S for full resolution)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random model and the generated clip")


def validate(args: argparse.Namespace) -> None:
    from d4rt.cli.common import check_output

    check_output(args.out, overwrite=True, inputs=(args.checkpoint, args.clip))  # before torch is imported


def moving_texture_clip(frames: int, height: int = 120, width: int = 160, seed: int = 0):
    """A synthetic clip: a smooth colour texture panning right and down, and a disc crossing it.

    Returns [frames, height, width, 3] uint8.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = [(rng.uniform(0.02, 0.12, 2), rng.uniform(0, 2 * np.pi, 3)) for _ in range(4)]
    clip = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        u, v = x + 2.0 * t, y + 1.0 * t  # the camera pans: the texture slides by (2, 1) px per frame
        image = np.zeros((height, width, 3), np.float32)
        for (fx, fy), phase in waves:
            image += np.sin(u[..., None] * fx + v[..., None] * fy + phase)
        image = 127.5 + 30.0 * image
        cx, cy = width * (0.2 + 0.6 * t / max(frames - 1, 1)), height * 0.5
        disc = (x - cx) ** 2 + (y - cy) ** 2 < (0.15 * height) ** 2
        image[disc] = (230, 60, 40)
        clip[t] = np.clip(image, 0, 255).astype(np.uint8)
    return clip


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import time

    import numpy as np

    from d4rt.benchmarking import bench_runtime
    from d4rt.checkpoint import load_or_init
    from d4rt.cli.common import command_line, output_dir
    from d4rt.export.onnx_export import export_onnx
    from d4rt.export.parity import verify_export
    from d4rt.runtime import load
    from d4rt.runtime.infer import infer_video

    started = time.perf_counter()
    final = Path(args.out)
    # The demo's own folder: replaced whole by each run (never a mix of two runs), nothing left if it fails; only a
    # folder an earlier d4rt command wrote is replaced, never one holding the checkpoint or the clip.
    with output_dir(final, overwrite=True, inputs=(args.checkpoint, args.clip), command=command_line(args)) as out:
        engines = out / "export"
        engines.mkdir(parents=True, exist_ok=True)

        # 1. the model
        ckpt = Path(args.checkpoint)
        if (ckpt / "config.json").is_file():
            model, info = load_or_init(ckpt, engines)
            print(f"[1/6] model: checkpoint {ckpt} ({model.num_parameters() / 1e6:.2f} M parameters)")
        else:
            model, info = load_or_init(None, engines, preset="tiny", random_init=True, seed=args.seed)
            print(f"[1/6] model: no checkpoint at {ckpt}, so a seeded random tiny model (seed {args.seed}, "
                  f"{model.num_parameters() / 1e6:.2f} M parameters): the pipeline is real, its outputs carry no meaning")

        # 2. export
        t0 = time.perf_counter()
        manifest = export_onnx(model, engines, precision="fp32", checkpoint=info, progress=False)
        print(f"[2/6] exported encoder.onnx + decoder.onnx (opset {manifest.opset}, T={manifest.num_frames}, "
              f"S={manifest.image_size}) to {final / 'export'} in {time.perf_counter() - t0:.1f} s")

        # 3. parity
        report = verify_export(model, engines, queries=2048, raise_on_failure=False)
        print("[3/6] " + report.table().replace("\n", "\n      "))
        if not report.passed:
            return 1  # the folder is still written: its parity report says what failed

        # 4. TensorRT when present
        if importlib.util.find_spec("tensorrt") is not None:
            from d4rt.export.tensorrt import EngineBuildOptions, build_engines

            t0 = time.perf_counter()
            build_engines(engines, engines, EngineBuildOptions(opt_queries=4096, max_queries=16384), progress=False)
            print(f"[4/6] built TensorRT engines in {time.perf_counter() - t0:.0f} s")
        else:
            print("[4/6] TensorRT is not installed here: no engine built (`d4rt build-engine` on a GPU machine)")

        # 5. a clip through the best backend
        clip_path = Path(args.clip)
        if clip_path.is_file():
            clip, clip_name = clip_path, str(clip_path)
        else:
            clip = moving_texture_clip(manifest.num_frames, seed=args.seed)
            np.save(out / "sample_clip.npy", clip)
            clip_name = f"a generated {clip.shape[0]}-frame {clip.shape[2]}x{clip.shape[1]} moving-texture clip"
        rt = load(engines, backend=args.backend)
        summary = infer_video(rt, clip, out / "results", depth_size=args.depth_size, progress=False)
        timing = ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in summary["timings"].items())
        print(f"[5/6] {clip_name} on {rt.name}: {timing}")
        print(f"      wrote depth maps, points.ply ({summary['cloud_points']} points), trajectory.json, tracks.npz and "
              f"preview.png to {final / 'results'}")

        # 6. speed beside eager PyTorch
        rows = [bench_runtime(r, [2048], repeats=3, warmup=1) for r in (rt, load(engines, backend="torch"))]
        print("[6/6] speed on this machine (median of 3 after 1 warm-up):")
        for r in rows:
            q = r["query"]["2048"]
            print(f"      {r['backend']:16s} encode {r['encode_ms']:8.1f} ms   {q['queries_per_s']:10,.0f} queries/s "
                  f"(batches of 2048)")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
