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
- camera poses (when the clip has ground-truth poses): the house's one estimator (the 85 % most confident pairs, a
  trimmed refit; the poses `d4rt infer` and the server give): synthetic clips through :meth:`Runtime.camera_poses`
  on a ``pose_size`` x ``pose_size`` grid, TAPVid-3D / PointOdyssey the video's (:func:`d4rt.runtime.windows.
  encode_video`, the same estimator inside each window, windows chained by Sim(3)); ATE and RPE after a Sim(3)
  alignment.

Which frames are scored: TAPVid-3D / PointOdyssey: every frame of each clip and every track queried in it (the
official script's protocol; ``start`` / ``max_frames`` narrow it), run in the runtime's aligned windows of the
model's ``num_frames`` frames, one scale per clip; each per-clip entry records its frames, windows, tracks scored
and the ground-truth NaN points (scored as misses, as the official code scores them). Synthetic clips: the
dataset's fixed window of ``num_frames`` frames.
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
from d4rt.runtime.runtime import renamed

FORMATS = ("clips", "tapvid3d", "pointodyssey")
REPORT_VERSION = 2


@dataclass(frozen=True)
class EvalOptions:
    """What to score and how much of it.

    num_queries: the paper's queries per synthetic clip (EPE, visibility); track_points: random tracks per
    synthetic clip; depth_stride: depth scored at every n-th pixel of the S x S input; pose_size: the pose
    estimator's n x n grid per frame (pose_grid: its deprecated old name); seed: fixes queries and tracks; start,
    max_frames: the frames scored of a TAPVid-3D / PointOdyssey clip (default: every frame, the benchmark's
    protocol); batch_size: queries per decoder call.
    """

    num_queries: int = 2048
    track_points: int = 256
    depth_stride: int = 4
    pose_size: int = 16
    seed: int = 0
    start: int = 0
    max_frames: int | None = None
    batch_size: int = 8192
    pose_grid: int | None = None  # deprecated: pose_size

    def __post_init__(self):
        if self.pose_grid is not None:
            given = None if self.pose_size == EvalOptions.pose_size else self.pose_size
            object.__setattr__(self, "pose_size", renamed(given, self.pose_grid, "pose_grid", "pose_size"))
            object.__setattr__(self, "pose_grid", None)
        for name in ("num_queries", "track_points", "depth_stride", "pose_size", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EvalOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.pose_size < 2:
            raise ValueError(f"EvalOptions.pose_size must be >= 2 (a grid of at least 2 x 2), got {self.pose_size}")
        if self.start < 0:
            raise ValueError(f"EvalOptions.start must be >= 0, got {self.start}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError(f"EvalOptions.max_frames must be >= 2 or None (every frame), got {self.max_frames}")


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
    out.update(_pose_scores(rt.camera_poses(scene, size=options.pose_size, batch_size=options.batch_size),
                            item["T_wc"].numpy()))
    return out


def evaluate_tracks(model, tracks, options: EvalOptions = EvalOptions(), predictions: dict | None = None) -> dict:
    """TAPVid-3D / PointOdyssey metrics of one :class:`~d4rt.data.formats.TrackSet`, on every frame it holds (read
    it whole, as the benchmark's official script scores it): tracks (when the file has 3-D tracks), depth (when it
    has depth maps) and poses (when it has extrinsics). The model answers through its runtime
    (:func:`model_runtime`), in windows of its ``num_frames`` frames (:func:`score_track_set`).
    """
    cfg = model.config
    F, step = tracks.num_frames, cfg.tubelet[0]
    T = min(cfg.num_frames, F // step * step)  # the window: the model's frames, or the whole (even) clip
    if T < step:
        raise ValueError(f"the track set has {F} frame{'s' if F != 1 else ''}; the model needs at least {step}")
    return score_track_set(model_runtime(model, T), tracks, options, predictions)


def score_track_set(rt, tracks, options: EvalOptions = EvalOptions(), predictions: dict | None = None) -> dict:
    """The metrics of :func:`evaluate_tracks`, answered by a runtime ``rt`` (any backend).

    The clip runs through the runtime's aligned windows (:func:`d4rt.runtime.windows.encode_video`, windows of
    ``rt.num_frames`` frames, one scale for the whole clip), as a deployed model answers a long video. Every track
    queried inside the set (TAPVid-3D: all of them) is followed from its query frame through every frame, in each
    frame's camera (:func:`~d4rt.runtime.windows.video_tracks`); depth, poses and intrinsics are the video's.

    predictions: a dict to fill with the predicted tracks in the official prediction format (tapnet
    ``evaluate_model.py``): "tracks_XYZ" [F, n, 3], "visibility" [F, n] bool, and "track_ids" [n] (the set's tracks
    scored), so the numbers can be recomputed outside (tests/test_evaluate_whole_clip.py does).
    """
    from d4rt.runtime.geometry import grid_uv
    from d4rt.runtime.windows import encode_video, video_tracks

    F = tracks.num_frames
    H, W = tracks.rgb.shape[1:3]
    S = rt.image_size
    has_tracks = tracks.tracks_cam is not None
    depth_size = len(range(0, S, options.depth_stride)) if tracks.depth is not None else 2
    video = encode_video(rt, tracks.rgb, aspect_ratio=W / H, pose_size=options.pose_size,
                         depth_size=max(depth_size, 2), cloud_size=2, keep_memory=has_tracks,
                         batch_size=options.batch_size)
    out: dict = {"frames": [tracks.start, tracks.start + F], "frames_in_file": tracks.frames_in_file,
                 "windows": len(video.windows), **{f"dropped_{k}": v for k, v in tracks.dropped.items()}}

    if has_tracks:
        t_query = np.round(tracks.queries_xyt[:, 2]).astype(np.int64)
        keep = np.flatnonzero((t_query >= 0) & (t_query < F))
        out["tracks_scored"], out["tracks_in_set"] = int(len(keep)), int(tracks.visible.shape[1])
        gt = tracks.tracks_cam[:, keep].transpose(1, 0, 2)  # [n, F, 3]
        gt_visible = tracks.visible[:, keep].T
        nan = ~np.isfinite(gt).all(-1)
        out["gt_nan_visible"], out["gt_nan_occluded"] = int((nan & gt_visible).sum()), int((nan & ~gt_visible).sum())
        if len(keep):
            q = tracks.queries_xyt[keep]
            # the file's pixel coordinates -> the house's uv (u = x / (W - 1), pixel centres at integers)
            uv = np.clip((q[:, :2] - tracks.pixel_centre) / [W - 1, H - 1], 0.0, 1.0).astype(np.float32)
            pred = video_tracks(rt, video, uv, t_query[keep], own_camera=True, batch_size=options.batch_size)
            pred_visible = pred["visibility"] > 0.5
            f = tracks.K[0, [0, 1], [0, 1]] * short_side_scale(H, W, TAPVID3D_RESOLUTION)
            out.update(_track_scores(pred["xyz"], gt, pred_visible, gt_visible, f[0], f[1], t_query[keep],
                                     valid=tracks.valid[:, keep].T))
            if predictions is not None:
                predictions.update(tracks_XYZ=pred["xyz"].transpose(1, 0, 2), visibility=pred_visible.T,
                                   track_ids=keep)
    video.scenes = None  # the windows' keys and values go now

    if tracks.depth is not None:
        n = video.depth_maps.shape[1]
        uv = grid_uv(n).reshape(n, n, 2)
        # the ground truth at the original pixel of each uv (nearest), u = x / (W - 1)
        gy, gx = np.rint(uv[..., 1] * (H - 1)).astype(int), np.rint(uv[..., 0] * (W - 1)).astype(int)
        out.update(_depth_scores(video.depth_maps.astype(np.float64), tracks.depth[:, gy, gx].astype(np.float64)))

    if tracks.T_wc is not None:
        out.update(_pose_scores(video.T_wc, tracks.T_wc))
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
    predictions_dir: str | Path | None = None,
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
        predictions_dir: TAPVid-3D only, whole clips only: an existing folder where each clip's predicted tracks
            are written as the official script reads them (``<clip name>.npz``: ``tracks_XYZ`` [F, N, 3] float32,
            ``visibility`` [F, N] bool), so tapnet's ``evaluate_model.py`` can score them too.
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
    if predictions_dir is not None and (fmt != "tapvid3d" or options.start or options.max_frames is not None):
        raise ValueError("predictions_dir writes TAPVid-3D predictions of whole clips: use it with fmt='tapvid3d', "
                         "start=0 and max_frames=None")
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
                predictions = None if predictions_dir is None else {}
                per_clip.append(evaluate_tracks(model, reader(p, options.start, options.max_frames), options,
                                                predictions))
                if predictions:
                    np.savez(Path(predictions_dir) / p.name, tracks_XYZ=predictions["tracks_XYZ"].astype(np.float32),
                             visibility=predictions["visibility"])
                if progress:
                    progress(f"[{i + 1}/{len(paths)}] {p.name}")
    mean, counts = _mean(per_clip)
    used = {k: v for k, v in dataclasses.asdict(options).items() if k != "pose_grid"}  # the deprecated alias
    return {
        "version": REPORT_VERSION, "format": fmt, "options": used,
        "num_frames": cfg.num_frames, "clips": [str(p) for p in paths], "mean": mean, "clips_per_metric": counts,
        "per_clip": per_clip, "seconds": round(time.perf_counter() - started, 1),
    }
