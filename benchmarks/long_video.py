"""Long videos in aligned windows (paper App. B) and dense tracking (Alg. 1), measured on rendered rooms.

Clips: synthetic rooms (d4rt.data.synthetic, test seeds 3,000,000..; the camera sweeps and 2 to 6 objects move)
of 96 and 200 frames. Windows of T = 16 frames overlapping by 4 (the default T / 4).

(a) oracle: exact answers from the renderer, each window in its own camera 0 at its own random scale (0.5 .. 2,
    the ambiguity a real model has), then with relative noise on every xyz (sigma of z) and with 10 % outliers
    (uniform in the room, confidence drawn at random); the chained trajectory against the ground truth, frame 0's
    camera = world: ATE (camera centres, world units of window 0 divided by its known scale, relative to the
    trajectory's extent), the worst frame per window index, and the scale drift of the last window.
(b) the bundled tiny-synthetic model (torch backend, CPU): whole-video ATE (camera centres after a Sim(3) fit,
    relative to the extent) and depth AbsRel (median-scaled per video) on every frame, windowed, against one
    window of 16 frames subsampled from the video (scored on those 16 frames, and the windowed run on the same 16).
(c) time: the alignment and chaining (Umeyama fits, pose composition) as a fraction of encode + query time, and
    peak resident memory of a process running a 32 / 96 / 200-frame video, streaming vs keep_memory.
(d) dense tracking on a 16-frame window: coverage, tracks / s, queries saved, oracle and bundled model.

Prints a table; writes JSON row by row to benchmarks/results/<date>-cpu-long-video.json.

    python benchmarks/long_video.py [--frames 96 200] [--skip-model]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from d4rt.benchmarking import run_record
from d4rt.data.oracle_video import ground_truth_poses, oracle_runtime
from d4rt.data.synthetic import Room
from d4rt.runtime.geometry import umeyama

ROOT = Path(__file__).resolve().parents[1]

SEED_BASE = 3_000_000
WINDOW, OVERLAP = 16, 4
CHECKPOINT = ROOT / "checkpoints" / "tiny-synthetic"


class Rows:
    def __init__(self, path: Path):
        self.path, self.rows = path, []
        self.header = run_record()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"run": self.header, "rows": self.rows}, indent=1) + "\n")


def render(frames: int, seed: int, height: int, width: int):
    return Room.random(seed, num_frames=frames, aspect=width / height).render_clip(height, width)


def centres_error(T_wc_pred: np.ndarray, T_wc_gt: np.ndarray, scale: float | None) -> tuple[np.ndarray, float]:
    """Per-frame centre error relative to the trajectory extent: divided by the known scale (oracle), or after a
    Sim(3) fit of the centres (a model). -> (errors [F], extent)."""
    c_pred, c_gt = T_wc_pred[:, :3, 3], T_wc_gt[:, :3, 3]
    if scale is not None:
        c_fit = c_pred / scale
    else:
        s, R, t = umeyama(c_pred, c_gt, with_scale=True)
        c_fit = s * c_pred @ R.T + t
    extent = float(np.linalg.norm(c_gt - c_gt.mean(0), axis=1).max())
    return np.linalg.norm(c_fit - c_gt, axis=1) / extent, extent


def oracle_rows(rows: Rows, clips: dict) -> None:
    settings = [(0.0, 0.0), (0.001, 0.0), (0.01, 0.0), (0.03, 0.0), (0.0, 0.05), (0.0, 0.1), (0.01, 0.1)]
    import d4rt.runtime.windows as windows

    for F, clip in clips.items():
        gt = ground_truth_poses(clip)
        for (noise, outliers), trim in [(s, windows.TRIM) for s in settings] + [((0.0, 0.1), None)]:
            rt = oracle_runtime(clip, 32, WINDOW, noise=noise, outliers=outliers, seed=1)
            start = time.perf_counter()
            video = rt.encode_video(clip.rgb, overlap=OVERLAP, pose_size=16, depth_size=2, cloud_size=2,
                                    align_trim=trim)
            seconds = time.perf_counter() - start
            scales = [s for _, s in rt.backend.windows]
            err, extent = centres_error(video.T_wc, gt, scales[0])
            rot = np.einsum("fij,fik->fjk", video.T_wc[:, :3, :3], gt[:, :3, :3])
            rot_deg = np.degrees(np.arccos(np.clip((np.trace(rot, axis1=1, axis2=2) - 1) / 2, -1, 1)))
            chained = np.cbrt(np.linalg.det(video.world_from_window[:, :3, :3]))
            drift = chained * np.array(scales) / scales[0] - 1  # 0: window w's scale recovered exactly
            per_window = [float(err[video.owner == w].max()) for w in range(len(video.windows))]
            rows.add({
                "part": "a-oracle", "frames": F, "windows": len(video.windows), "noise": noise, "outliers": outliers,
                "fit": "top 85 %" + ("" if trim is None else f" + refit without residuals > {trim}x median"),
                "ate_mean_rel": float(err.mean()), "ate_max_rel": float(err.max()), "extent_m": extent,
                "rotation_max_deg": float(rot_deg.max()), "scale_drift_last": float(drift[-1]),
                "scale_drift_max": float(np.abs(drift).max()), "error_per_window": per_window,
                "seconds": round(seconds, 2),
            })


def depth_abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    ok = np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
    s = np.median(gt[ok]) / np.median(pred[ok])
    return float(np.mean(np.abs(s * pred[ok] - gt[ok]) / gt[ok]))


def model_rows(rows: Rows, clips: dict, rt) -> None:
    from d4rt.runtime.geometry import grid_uv

    n = 32
    uv = grid_uv(n).astype(np.float64)
    for F, clip in clips.items():
        gt = ground_truth_poses(clip)
        gt_depth = np.stack([clip.query(uv, f, f, f)["xyz_cam"][:, 2].reshape(n, n) for f in range(F)])
        start = time.perf_counter()
        video = rt.encode_video(clip.rgb, overlap=OVERLAP, depth_size=n, cloud_size=2, pose_size=16)
        seconds = time.perf_counter() - start
        err, _ = centres_error(video.T_wc, gt, None)
        stride = -(-F // WINDOW)
        sub = np.arange(0, F, stride)[:WINDOW]
        scene = rt.encode(clip.rgb[sub])
        one_poses = rt.camera_poses(scene, size=16)
        one_depth = rt.depth(scene, None, n)
        one_err, _ = centres_error(one_poses, np.linalg.inv(gt[sub[0]]) @ gt[sub], None)
        same, _ = centres_error(video.T_wc[sub], gt[sub], None)
        t = video.timings
        rows.add({
            "part": "b-model", "frames": F, "windows": len(video.windows),
            "windowed_ate_rel": float(np.sqrt((err**2).mean())),
            "windowed_depth_abs_rel": depth_abs_rel(video.depth_maps, gt_depth),
            "windowed_on_subsampled_frames_ate_rel": float(np.sqrt((same**2).mean())),
            "windowed_on_subsampled_frames_depth_abs_rel": depth_abs_rel(video.depth_maps[sub], gt_depth[sub]),
            "one_window_stride": int(stride), "one_window_ate_rel": float(np.sqrt((one_err**2).mean())),
            "one_window_depth_abs_rel": depth_abs_rel(one_depth, gt_depth[sub]),
            "seconds": round(seconds, 2), "timings": t,
        })
        rows.add({
            "part": "c-overhead", "frames": F, "encode_s": t["encode_s"], "query_s": t["query_s"],
            "align_s": t["align_s"], "align_fraction": t["align_s"] / (t["encode_s"] + t["query_s"]),
        })


MEMORY_SCRIPT = """
import resource, sys, numpy as np
sys.path.insert(0, {root!r})
from d4rt.runtime import load
from benchmarks.long_video import render
rt = load({ckpt!r}, backend="torch")
clip = render({frames}, {seed}, 96, 128)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
video = rt.encode_video(clip.rgb, overlap={overlap}, depth_size=8, cloud_size=2, pose_size=8, keep_memory={keep})
kv = 0
for scene in video.scenes or []:
    kv += sum(x.numel() * x.element_size() for x in (scene.state.keys, scene.state.values))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, before, kv)
"""


def memory_rows(rows: Rows) -> None:
    for keep in (False, True):
        for F in (32, 96, 200):
            code = MEMORY_SCRIPT.format(root=str(ROOT), ckpt=str(CHECKPOINT), frames=F, seed=SEED_BASE, keep=keep,
                                        overlap=OVERLAP)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            peak, before, kv = (int(x) for x in out.stdout.split()[-3:])
            rows.add({"part": "c-memory", "frames": F, "keep_memory": keep, "peak_rss_mb": round(peak / 1024, 1),
                      "rss_before_video_mb": round(before / 1024, 1), "kept_kv_mb": round(kv / 2**20, 2)})


def dense_rows(rows: Rows, clip, rt_model) -> None:
    from d4rt.runtime.dense_tracks import dense_tracks

    for name, rt in (("oracle", oracle_runtime(clip, 32, WINDOW)), ("tiny-synthetic", rt_model)):
        if rt is None:
            continue
        scene = rt.encode(clip.rgb[:WINDOW])
        dense = dense_tracks(rt, scene, size=32)
        rows.add({"part": "d-dense", "answers": name, "frames": WINDOW, **dense.summary()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[96, 200], help="clip lengths")
    parser.add_argument("--skip-model", action="store_true", help="oracle rows only (no checkpoint needed)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = parser.parse_args()
    day = time.strftime("%Y-%m-%d", time.gmtime())
    rows = Rows(Path(args.out) / f"{day}-cpu-long-video.json")
    clips = {F: render(F, SEED_BASE + i, 96, 128) for i, F in enumerate(args.frames)}
    oracle_rows(rows, clips)
    rt_model = None
    if not args.skip_model:
        from d4rt.runtime import load

        rt_model = load(CHECKPOINT, backend="torch")
        model_rows(rows, clips, rt_model)
        memory_rows(rows)
    dense_rows(rows, clips[args.frames[0]], rt_model)
    print(f"wrote {rows.path} (peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB)")


if __name__ == "__main__":
    main()
