"""Evaluation: a model's depth, 3-D points, tracks, camera poses and visibility on clips, scored with
:mod:`d4rt.evaluation.metrics` (each metric as its authors compute it; the table is docs/metrics.md).

``evaluate(model, paths, fmt, options)`` scores every clip and returns the report (``d4rt evaluate`` writes it as
JSON). The model answers queries through the runtime's torch backend, exactly as a deployed model does (batching,
sigmoid, poses). Per clip the video is encoded once; every answer below is a query:

- depth: every ``depth_stride``-th pixel of every frame (t_src = t_tgt = t_cam) against the ground truth at that
  pixel; AbsRel and delta < 1.25 with frame-median and clip-median scaling (monodepth2's clamp), beside the best
  constant depth's AbsRel (synthetic clips, PointOdyssey);
- 3-D points (synthetic clips): the paper's query sampling (fixed seed); EPE after median-norm scaling and
  visibility accuracy;
- tracks: each track from its query point through every scored frame in that frame's camera (t_tgt = t_cam):
  TAPVid-3D's APD3D, 3D-AJ (median and per-trajectory scaling) and occlusion accuracy, thresholds at the
  benchmark's resolution (fx, fy times 256 / min(H, W)); synthetic clips: ``track_points`` random source pixels;
- camera poses (when the clip has ground-truth poses): the runtime's estimator (:meth:`Runtime.camera_poses`, a
  ``pose_grid`` x ``pose_grid`` grid, unweighted rigid Umeyama as OpenD4RT's); ATE and RPE after a Sim(3)
  alignment.

Which frames are scored: the model's ``num_frames`` consecutive frames of each clip (synthetic clips: the dataset's
fixed window; TAPVid-3D / PointOdyssey: frames ``start`` .. ``start + num_frames - 1``, tracks queried inside
them); each per-clip entry records its frames. Scoring every frame of a longer clip comes with the video issue.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from d4rt.evaluation.metrics import (
    DEPTH_SCALINGS,
    TAPVID3D_RESOLUTION,
    TRACK_SCALINGS,
    best_constant_depth_abs_rel,
    camera_ate,
    camera_rpe,
    depth_metrics,
    epe_3d,
    tapvid3d_metrics,
    visibility_accuracy,
)
from d4rt.runtime.geometry import short_side_scale

FORMATS = ("clips", "tapvid3d", "pointodyssey")
REPORT_VERSION = 2


@dataclass(frozen=True)
class EvalOptions:
    """What to score and how much of it.

    num_queries: the paper's queries per synthetic clip (EPE, visibility); track_points: random tracks per
    synthetic clip; depth_stride: depth scored at every n-th pixel of the S x S input; pose_grid: the pose
    estimator's grid; seed: fixes queries and tracks; start: first frame scored of a TAPVid-3D / PointOdyssey clip;
    batch_size: queries per decoder call.
    """

    num_queries: int = 2048
    track_points: int = 256
    depth_stride: int = 4
    pose_grid: int = 16
    seed: int = 0
    start: int = 0
    batch_size: int = 8192

    def __post_init__(self):
        for name in ("num_queries", "track_points", "depth_stride", "pose_grid", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EvalOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.pose_grid < 2:
            raise ValueError(f"EvalOptions.pose_grid must be >= 2 (a grid of at least 2 x 2), got {self.pose_grid}")
        if self.start < 0:
            raise ValueError(f"EvalOptions.start must be >= 0, got {self.start}")


def model_runtime(model, num_frames: int | None = None, backend=None):
    """The runtime over a model in memory (its torch backend), for clips of ``num_frames`` frames (default: the
    model's most); ``backend``: another runtime backend answering for it (an export in ONNX Runtime, the model in
    bf16: docs/precision.md's budget table)."""
    from d4rt.runtime.backend_torch import TorchBackend
    from d4rt.runtime.runtime import Runtime

    return Runtime(backend or TorchBackend(model), num_frames or model.config.num_frames, model.config.image_size)


def depth_grid(image_size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``stride``-th pixel of the S x S input: uv [P, 2] (u = x / (S - 1)) and pixel indices (ys, xs)
    [h, w] each."""
    idx = np.arange(0, image_size, stride)
    ys, xs = np.meshgrid(idx, idx, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], -1) / (image_size - 1), (ys, xs)


def predict_depth(rt, scene, uv: np.ndarray, batch_size: int) -> np.ndarray:
    """Depth (z in each frame's own camera) at uv [P, 2] of every frame -> [T, P] float64."""
    T = scene.num_frames
    t = np.repeat(np.arange(T), len(uv))
    z = rt.query(scene, np.tile(uv, (T, 1)), t, t, t, batch_size)["xyz"][:, 2]
    return z.reshape(T, len(uv)).astype(np.float64)


def _depth_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    out = {}
    for scaling in DEPTH_SCALINGS:
        d = depth_metrics(pred, gt, scaling=scaling)
        out[f"depth_abs_rel_{scaling}"], out[f"depth_delta_1.25_{scaling}"] = d["abs_rel"], d["delta_1.25"]
    out["depth_abs_rel_best_constant"] = best_constant_depth_abs_rel(gt)
    return out


def _track_scores(pred, gt, pred_visible, gt_visible, fx, fy, query_t, valid=None) -> dict[str, float]:
    out = {}
    for scaling in TRACK_SCALINGS:
        m = tapvid3d_metrics(pred, gt, pred_visible, gt_visible, fx, fy, scaling, query_t=query_t, valid=valid)
        out[f"apd3d_{scaling}"], out[f"aj3d_{scaling}"] = m["apd3d"], m["aj3d"]
        out["occlusion_acc"] = m["occlusion_acc"]  # independent of the scaling
    return out


def _pose_scores(pred_T_wc: np.ndarray, gt_T_wc: np.ndarray) -> dict[str, float]:
    rpe = camera_rpe(pred_T_wc, gt_T_wc)
    return {"pose_ate": camera_ate(pred_T_wc, gt_T_wc)["ate"], "pose_rpe_trans": rpe["rpe_trans"],
            "pose_rpe_rot_deg": rpe["rpe_rot_deg"]}


def evaluate_clip(model, item: dict, clip, options: EvalOptions = EvalOptions(), backend=None) -> dict:
    """All metrics of one synthetic clip. ``item`` is its :class:`~d4rt.data.dataset.D4RTDataset` sample (fixed
    queries, the frame window), ``clip`` the :class:`~d4rt.data.synthetic.RenderedClip` (exact track targets);
    ``backend``: see :func:`model_runtime`."""
    T, S = item["video"].shape[0], item["video"].shape[-1]
    rt = model_runtime(model, T, backend)
    frames = item["video"].float().permute(0, 2, 3, 1).numpy()  # [T, S, S, 3] in [0, 1]
    scene = rt.encode(frames, aspect_ratio=float(item["aspect_ratio"]))
    start = int(item["window_start"])
    out: dict = {"frames": [start, start + T], "frames_in_file": int(clip.num_frames)}

    uv, (ys, xs) = depth_grid(S, options.depth_stride)
    depth = predict_depth(rt, scene, uv, options.batch_size).reshape(T, *ys.shape)
    out.update(_depth_scores(depth, item["depth_maps"].numpy()[:, ys, xs].astype(np.float64)))

    pred = rt.query(scene, item["coords_uv"].numpy().astype(np.float32), item["t_src"].numpy(),
                    item["t_tgt"].numpy(), item["t_cam"].numpy(), options.batch_size)
    valid = item["valid"].numpy()
    out["epe_3d"] = epe_3d(pred["xyz"], item["gt_3d"].numpy(), valid)["epe"]
    out["visibility_acc"] = visibility_accuracy(pred["visibility"] > 0.5, item["gt_visibility"].numpy() > 0.5, valid)

    rng = np.random.default_rng(options.seed)
    n = options.track_points
    uv_src, t_src = rng.uniform(0.0, 1.0, (n, 2)), rng.integers(0, T, n)
    uv_q, ts_q, tt_q = np.repeat(uv_src, T, 0), np.repeat(t_src, T), np.tile(np.arange(T), n)
    gt = clip.query(uv_q, ts_q + start, tt_q + start, tt_q + start)
    tracks = rt.query(scene, uv_q, ts_q, tt_q, tt_q, options.batch_size)
    H, W = clip.size
    f = clip.K[[0, 1], [0, 1]] * short_side_scale(H, W, TAPVID3D_RESOLUTION)
    out.update(_track_scores(tracks["xyz"].reshape(n, T, 3), gt["xyz_cam"].reshape(n, T, 3),
                             (tracks["visibility"] > 0.5).reshape(n, T), gt["visible"].reshape(n, T),
                             f[0], f[1], t_src))
    out.update(_pose_scores(rt.camera_poses(scene, grid=options.pose_grid, batch_size=options.batch_size),
                            item["T_wc"].numpy()))
    return out


def evaluate_tracks(model, tracks, options: EvalOptions = EvalOptions()) -> dict:
    """TAPVid-3D / PointOdyssey metrics of one :class:`~d4rt.data.formats.TrackSet` (read with
    ``max_frames`` = the model's num_frames): tracks (when the file has 3-D tracks), depth (when it has depth
    maps) and poses (when it has extrinsics).

    The first T frames of the set are scored, T = its frames rounded down to the model's tubelet; each track
    queried inside them is followed through every one of them, in each frame's camera.
    """
    import cv2

    cfg = model.config
    T = min(cfg.num_frames, tracks.num_frames) // cfg.tubelet[0] * cfg.tubelet[0]
    if T == 0:
        raise ValueError(f"the track set has {tracks.num_frames} frames; the model needs at least {cfg.tubelet[0]}")
    H, W = tracks.rgb.shape[1:3]
    S = cfg.image_size
    rt = model_runtime(model, T)
    frames = np.stack([cv2.resize(f, (S, S), interpolation=cv2.INTER_AREA) for f in tracks.rgb[:T]])
    scene = rt.encode(frames, aspect_ratio=W / H)
    out: dict = {"frames": [tracks.start, tracks.start + T], "frames_in_file": tracks.frames_in_file,
                 **{f"dropped_{k}": v for k, v in tracks.dropped.items()}}

    if tracks.tracks_cam is not None:
        t_query = np.round(tracks.queries_xyt[:, 2]).astype(np.int64)
        keep = np.flatnonzero((t_query >= 0) & (t_query < T) & tracks.visible[:T].any(0))
        out["tracks_scored"], out["tracks_in_set"] = int(len(keep)), int(tracks.visible.shape[1])
        if len(keep):
            q = tracks.queries_xyt[keep]
            # the file's pixel coordinates -> the house's uv (u = x / (W - 1), pixel centres at integers)
            uv = np.clip((q[:, :2] - tracks.pixel_centre) / [W - 1, H - 1], 0.0, 1.0)
            n = len(keep)
            t_all = np.tile(np.arange(T), n)
            pred = rt.query(scene, np.repeat(uv, T, 0), np.repeat(t_query[keep], T), t_all, t_all,
                            options.batch_size)
            f = tracks.K[0, [0, 1], [0, 1]] * short_side_scale(H, W, TAPVID3D_RESOLUTION)
            out.update(_track_scores(
                pred["xyz"].reshape(n, T, 3), tracks.tracks_cam[:T, keep].transpose(1, 0, 2),
                (pred["visibility"] > 0.5).reshape(n, T), tracks.visible[:T, keep].T, f[0], f[1],
                t_query[keep], valid=tracks.valid[:T, keep].T,
            ))

    if tracks.depth is not None:
        uv, (ys, xs) = depth_grid(S, options.depth_stride)
        depth = predict_depth(rt, scene, uv, options.batch_size).reshape(T, *ys.shape)
        # the ground truth at the original pixel of each uv (nearest), u = x / (W - 1)
        gy, gx = np.rint(ys / (S - 1) * (H - 1)).astype(int), np.rint(xs / (S - 1) * (W - 1)).astype(int)
        out.update(_depth_scores(depth, tracks.depth[:T][:, gy, gx].astype(np.float64)))

    if tracks.T_wc is not None:
        out.update(_pose_scores(rt.camera_poses(scene, grid=options.pose_grid, batch_size=options.batch_size),
                                tracks.T_wc[:T]))
    return out


def load_model(ckpt: Path | None, preset: str = "tiny", seed: int = 0, image_size: int | None = None):
    """A save_pretrained directory, a Lightning .ckpt, or (None) a seeded untrained model of ``preset`` (at
    ``image_size`` when given: no weight depends on the input size). float32, eval."""
    from d4rt.checkpoint import random_model
    from d4rt.models import D4RT

    if ckpt is None:
        return random_model(preset, seed, image_size)
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        return D4RT.from_pretrained(ckpt).float().eval()
    if ckpt.suffix == ".ckpt" and ckpt.is_file():
        import tempfile

        from d4rt.training.fit import export_pretrained

        with tempfile.TemporaryDirectory() as tmp:
            return D4RT.from_pretrained(export_pretrained(ckpt, tmp)).float().eval()
    raise FileNotFoundError(f"checkpoint {ckpt}: expected a save_pretrained directory or a Lightning .ckpt file")


def find_eval_paths(root: str | Path, fmt: str) -> list[Path]:
    """The clips of ``fmt`` under root (a folder, or one clip): clip .npz files, TAPVid-3D .npz files, or
    PointOdyssey sequence folders (holding anno.npz)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"test data {root} does not exist")
    if fmt == "pointodyssey":
        paths = [root] if (root / "anno.npz").is_file() else sorted(p.parent for p in root.glob("*/anno.npz"))
    else:
        paths = [root] if root.is_file() else sorted(root.glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no {fmt} data under {root}")
    return paths


def _mean(per_clip: list[dict]) -> tuple[dict[str, float], dict[str, int]]:
    """Mean over clips of every float metric (over the clips that have it) and how many clips each mean covers."""
    keys = [k for k in dict.fromkeys(k for m in per_clip for k in m) if all(
        isinstance(m.get(k, 0.0), float) for m in per_clip) and not k.startswith("dropped_")]
    mean = {k: float(np.mean([m[k] for m in per_clip if k in m])) for k in keys}
    return mean, {k: sum(k in m for m in per_clip) for k in keys}


def evaluate(
    model,
    paths: Sequence[str | Path],
    fmt: str = "clips",
    options: EvalOptions = EvalOptions(),
    progress: Callable[[str], None] | None = None,
    backend=None,
) -> dict:
    """Score ``model`` on every clip in ``paths`` and return the report.

    Args:
        model: a :class:`~d4rt.models.D4RT` (float32, eval).
        paths: synthetic clip .npz files (fmt "clips"), TAPVid-3D .npz files ("tapvid3d") or PointOdyssey
            sequence folders ("pointodyssey"); :func:`find_eval_paths` lists them.
        options: :class:`EvalOptions`.
        progress: called with one line per clip (e.g. print).
        backend: synthetic clips: a runtime backend that answers the queries instead of the model's torch backend
            (an ONNX Runtime export of it, the model in bf16); the model still gives the config.
    Returns:
        {"version", "format", "options", "num_frames", "clips": [str], "mean": {metric: float},
        "clips_per_metric": {metric: int}, "per_clip": [{metric: float, "frames": [start, stop], ...}],
        "seconds"}. Metric names are stable (docs/metrics.md).
    """
    import torch

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    if backend is not None and fmt != "clips":
        raise ValueError(f"evaluate(..., backend=) scores synthetic clips (format 'clips'), not {fmt!r}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no clips to evaluate: paths is empty")
    cfg = model.config
    started = time.perf_counter()
    per_clip = []
    with torch.inference_mode():
        if fmt == "clips":
            from d4rt.data.dataset import D4RTDataset

            dataset = D4RTDataset(paths, cfg.num_frames, cfg.image_size, options.num_queries,
                                  seed=options.seed + 2, fixed_queries=True)
            for i in range(len(paths)):
                per_clip.append(evaluate_clip(model, dataset[i], dataset.load(i)[0], options, backend))
                if progress:
                    progress(f"[{i + 1}/{len(paths)}] {paths[i].name}")
        else:
            from d4rt.data.formats import read_pointodyssey, read_tapvid3d

            reader = read_tapvid3d if fmt == "tapvid3d" else read_pointodyssey
            for i, p in enumerate(paths):
                per_clip.append(evaluate_tracks(model, reader(p, options.start, cfg.num_frames), options))
                if progress:
                    progress(f"[{i + 1}/{len(paths)}] {p.name}")
    mean, counts = _mean(per_clip)
    return {
        "version": REPORT_VERSION, "format": fmt, "options": dataclasses.asdict(options),
        "num_frames": cfg.num_frames, "clips": [str(p) for p in paths], "mean": mean, "clips_per_metric": counts,
        "per_clip": per_clip, "seconds": round(time.perf_counter() - started, 1),
    }
