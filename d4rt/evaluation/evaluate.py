"""Evaluation: a model's depth, 3-D points, tracks, camera poses and visibility on clips, scored with
:mod:`d4rt.evaluation.metrics`; the LightningModule that averages them over clips, and the ``d4rt evaluate`` command.

Per clip (the video is encoded once; every answer below is a query):
- depth: every ``depth_stride``-th pixel of every frame, t_src = t_tgt = t_cam; AbsRel and delta < 1.25 after
  median scaling, next to the best constant depth's AbsRel (the baseline a model must beat);
- 3-D points: the paper's query sampling (fixed seed); EPE after median-norm scaling; visibility accuracy;
- tracks: ``track_points`` source pixels followed through every frame in its own camera (t_tgt = t_cam);
  APD3D with thresholds in pixels of a 256 x 256 input (TAPVid-3D's scale);
- camera poses: a ``pose_grid`` x ``pose_grid`` query grid of frame j in camera j and in camera 0, aligned by a
  confidence-weighted rigid Umeyama (the runtime's estimator, OpenD4RT's recipe); ATE after a Sim(3) alignment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from d4rt.data.synthetic import TEST_SEED_BASE
from d4rt.data.dataset import D4RTDataset, scale_intrinsics
from d4rt.data.formats import TrackSet
from d4rt.data.synthetic import RenderedClip
from d4rt.models import D4RT
from d4rt.runtime.backend_torch import TorchBackend
from d4rt.runtime.runtime import Runtime, Scene
from d4rt.evaluation.metrics import (
    apd3d,
    best_constant_depth_abs_rel,
    camera_ate,
    depth_metrics,
    epe_3d,
    visibility_accuracy,
)

APD_IMAGE_SIZE = 256


def model_runtime(model: D4RT, num_frames: int | None = None) -> Runtime:
    """The runtime over a model in memory (its torch backend), for clips of ``num_frames`` frames (default: the
    model's most): evaluation answers queries exactly as a deployed model does (batching, sigmoid, poses)."""
    cfg = model.config
    return Runtime(TorchBackend(model), num_frames or cfg.num_frames, cfg.image_size, min_frames=cfg.tubelet[0],
                   frame_step=cfg.tubelet[0])


def predict_depth(rt: Runtime, scene: Scene, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth (z) at every ``stride``-th pixel of every frame. -> depth [T, h, w], pixel indices (ys, xs)."""
    T, S = scene.num_frames, scene.image_size
    idx = np.arange(0, S, stride)
    ys, xs = np.meshgrid(idx, idx, indexing="ij")
    uv = np.stack([xs.ravel(), ys.ravel()], -1) / (S - 1)
    t = np.repeat(np.arange(T), len(uv))
    z = rt.query(scene, np.tile(uv, (T, 1)), t, t, t)["xyz"][:, 2]
    return z.reshape(T, len(idx), len(idx)).astype(np.float64), (ys, xs)


def evaluate_clip(
    model: D4RT,
    item: dict[str, torch.Tensor],
    clip: RenderedClip,
    track_points: int = 256,
    depth_stride: int = 4,
    pose_grid: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """All metrics of one clip. ``item`` is its :class:`D4RTDataset` sample (fixed queries), ``clip`` the clip
    (for exact track targets)."""
    T, S = item["video"].shape[0], item["video"].shape[-1]
    rt = model_runtime(model, T)
    frames = item["video"].float().permute(0, 2, 3, 1).numpy()  # [T, S, S, 3] in [0, 1]
    scene = rt.encode(frames, aspect_ratio=float(item["aspect_ratio"]))
    out: dict[str, float] = {}

    # depth
    depth, (ys, xs) = predict_depth(rt, scene, depth_stride)
    gt_depth = item["depth_maps"].numpy()[:, ys, xs]
    d = depth_metrics(depth, gt_depth)
    out["depth_abs_rel"], out["depth_delta_1.25"] = d["abs_rel"], d["delta_1.25"]
    out["depth_abs_rel_best_constant"] = best_constant_depth_abs_rel(gt_depth)

    # the paper's queries: 3-D points and visibility
    pred = rt.query(scene, item["coords_uv"].numpy().astype(np.float32), item["t_src"].numpy(),
                    item["t_tgt"].numpy(), item["t_cam"].numpy())
    valid = item["valid"].numpy()
    out["epe_3d"] = epe_3d(pred["xyz"], item["gt_3d"].numpy(), valid)["epe"]
    out["visibility_acc"] = visibility_accuracy(pred["visibility"] > 0.5, item["gt_visibility"].numpy() > 0.5, valid)

    # tracks through every frame, each in its own camera (TAPVid-3D's setting)
    rng = np.random.default_rng(seed)
    uv_src = rng.uniform(0.0, 1.0, (track_points, 2))
    t_src = rng.integers(0, T, track_points)
    uv_q = np.repeat(uv_src, T, 0)
    ts_q = np.repeat(t_src, T)
    tt_q = np.tile(np.arange(T), track_points)
    start = int(item["window_start"])
    gt = clip.query(uv_q, ts_q + start, tt_q + start, tt_q + start)
    pred_tracks = rt.query(scene, uv_q, ts_q, tt_q, tt_q)
    K = item["intrinsics"].numpy().astype(np.float64)
    to_256 = (APD_IMAGE_SIZE - 1) / (S - 1)
    a = apd3d(
        pred_tracks["xyz"].reshape(track_points, T, 3), gt["xyz_cam"].reshape(track_points, T, 3),
        gt["visible"].reshape(track_points, T), K[0, 0] * to_256, K[1, 1] * to_256,
        pred_visible=(pred_tracks["visibility"] > 0.5).reshape(track_points, T),
    )
    out["apd3d"] = a["apd3d"]

    # camera poses
    out["pose_ate"] = camera_ate(rt.camera_poses(scene, grid=pose_grid), item["T_wc"].numpy())["ate"]
    return out


def evaluate_tracks(model: D4RT, tracks: TrackSet) -> dict[str, float]:
    """APD3D and occlusion accuracy on a :class:`~d4rt.data.formats.TrackSet` (TAPVid-3D, PointOdyssey).

    Every frame and every track, as the official scripts score them: the video runs in aligned windows of the
    model's T frames (:func:`d4rt.runtime.windows.encode_video`, kept in memory), and each track is queried at its
    query point (x, y, t) and followed through every frame in that frame's camera, across the windows
    (:func:`d4rt.runtime.windows.video_tracks`).
    """
    from d4rt.runtime.windows import encode_video, video_tracks

    cfg = model.config
    F, H, W = tracks.rgb.shape[:3]
    q = tracks.queries_xyt
    uv = np.clip(q[:, :2] / [W - 1, H - 1], 0.0, 1.0).astype(np.float32)
    t_src = np.clip(np.round(q[:, 2]).astype(np.int64), 0, F - 1)
    rt = model_runtime(model)
    video = encode_video(rt, tracks.rgb, aspect_ratio=W / H, depth_size=2, cloud_size=2, keep_memory=True)
    pred = video_tracks(rt, video, uv, t_src, own_camera=True)
    n = len(uv)
    gt = tracks.tracks_cam.transpose(1, 0, 2)  # [n, F, 3]
    valid = tracks.valid.T
    gt_visible = tracks.visible.T & valid
    pred_visible = pred["visibility"] > 0.5
    K = tracks.K[0]
    K_256 = scale_intrinsics(K, H, W, APD_IMAGE_SIZE)
    a = apd3d(pred["xyz"].reshape(n, F, 3), gt, gt_visible, K_256[0, 0], K_256[1, 1], pred_visible=pred_visible)
    return {"apd3d": a["apd3d"], "occlusion_acc": visibility_accuracy(pred_visible, gt_visible, valid)}


class _EvalClips(Dataset):
    """Synthetic clips: (item with fixed queries, clip) per index."""

    def __init__(self, dataset: D4RTDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index], self.dataset.load(index)[0]


class _EvalTrackSets(Dataset):
    """TAPVid-3D clips or PointOdyssey sequences: one TrackSet per path."""

    def __init__(self, paths: list[Path], reader):
        self.paths, self.reader = paths, reader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.reader(self.paths[index])


def _single(batch):
    return batch[0]


class D4RTEvaluation(L.LightningModule):
    """Runs :func:`evaluate_clip` per synthetic clip (or :func:`evaluate_tracks` per TrackSet); Lightning
    averages the logged metrics over clips (and devices).
    Per-clip results are kept in ``self.per_clip``."""

    def __init__(self, model: D4RT, **evaluate_kwargs):
        super().__init__()
        self.model = model.eval()
        self.evaluate_kwargs = evaluate_kwargs
        self.per_clip: list[dict[str, float]] = []

    def test_step(self, batch, batch_idx: int) -> None:
        if isinstance(batch, TrackSet):
            metrics = evaluate_tracks(self.model, batch)
        else:
            item, clip = batch
            metrics = evaluate_clip(self.model, item, clip, **self.evaluate_kwargs)
        self.per_clip.append(metrics)
        self.log_dict({f"test/{k}": v for k, v in metrics.items()}, batch_size=1, sync_dist=True)


def load_model(ckpt: Path | None, preset: str, seed: int, image_size: int | None = None) -> D4RT:
    """A save_pretrained directory, a Lightning .ckpt, or (None) an untrained model of ``preset`` (at
    ``image_size`` when given: no weight depends on the input size)."""
    from d4rt.checkpoint import random_model

    if ckpt is None:
        return random_model(preset, seed, image_size)
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        return D4RT.from_pretrained(ckpt).float().eval()
    if ckpt.suffix == ".ckpt":
        import tempfile

        from d4rt.training.fit import export_pretrained

        with tempfile.TemporaryDirectory() as tmp:
            return D4RT.from_pretrained(export_pretrained(ckpt, tmp)).eval()
    raise FileNotFoundError(f"--ckpt {ckpt}: expected a save_pretrained directory or a Lightning .ckpt file")


# ----------------------------------------------------------------------------------------------------------------
# the command (arguments in cli/evaluate.py)
# ----------------------------------------------------------------------------------------------------------------
def evaluate(args: argparse.Namespace) -> int:
    """Evaluate from the parsed ``d4rt evaluate`` arguments (see :mod:`d4rt.cli.evaluate`)."""
    from d4rt.data.datamodule import find_clips
    from d4rt.data.synthetic import generate_clips
    from d4rt.runtime.files import write_text_atomic

    model = load_model(args.ckpt, args.preset, args.seed, args.img_size if args.ckpt is None else None)
    cfg = model.config
    if args.img_size is not None and args.img_size != cfg.image_size:
        raise ValueError(f"--img_size {args.img_size} differs from the model's {cfg.image_size}; drop the flag")
    if args.test_data_path is None:
        raise ValueError("give --test_data_path (a folder of clips; with --synthetic N they are generated there)")
    if args.synthetic:
        generate_clips(args.test_data_path, range(TEST_SEED_BASE, TEST_SEED_BASE + args.synthetic),
                       cfg.num_frames, cfg.image_size)
    if args.format == "clips":
        dataset = D4RTDataset(find_clips(args.test_data_path), cfg.num_frames, cfg.image_size, args.num_queries,
                              seed=args.seed + 2, fixed_queries=True)
        paths, evaluation_set = dataset.paths, _EvalClips(dataset)
    else:
        from d4rt.data.formats import read_pointodyssey, read_tapvid3d

        root = Path(args.test_data_path)
        if args.format == "tapvid3d":
            paths, reader = ([root] if root.is_file() else sorted(root.glob("*.npz"))), read_tapvid3d
        else:
            paths = [root] if (root / "anno.npz").is_file() else sorted(p.parent for p in root.glob("*/anno.npz"))
            reader = read_pointodyssey
        if not paths:
            raise FileNotFoundError(f"no {args.format} data under {root}")
        evaluation_set = _EvalTrackSets(paths, reader)
    loader = DataLoader(evaluation_set, batch_size=1, collate_fn=_single)
    evaluation = D4RTEvaluation(model, track_points=args.track_points, depth_stride=args.depth_stride,
                                seed=args.seed)
    trainer = L.Trainer(accelerator=args.accelerator, devices=args.devices, logger=False, precision="32-true")
    mean = {k.removeprefix("test/"): float(v) for k, v in trainer.test(evaluation, loader, verbose=False)[0].items()}
    print(f"\n{len(paths)} clips, model {args.ckpt or 'untrained ' + args.preset}")
    for k, v in mean.items():
        print(f"  {k:30s} {v:.4f}")
    if args.output is not None:
        report = {"ckpt": str(args.ckpt), "clips": [str(p) for p in paths], "mean": mean,
                  "per_clip": evaluation.per_clip}
        write_text_atomic(args.output, json.dumps(report, indent=2) + "\n")
        print(f"-> {args.output}")
    return 0
