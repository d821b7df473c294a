"""`d4rt evaluate` on a TAPVid-3D clip longer than the model's frames scores every frame and every track, through
the runtime's aligned windows, and its numbers equal TAPVid-3D's official metric (tapnet
``tapvid3d/evaluation/metrics.py`` ``compute_tapvid3d_metrics``) re-derived here by hand, point by point in float64
Python, on the predictions the evaluation made. A visible NaN ground-truth point is a miss, as the official code
scores it.

The clip is written in TAPVid-3D's layout with plain numpy / OpenCV (tests/test_formats.py's writer), from a
synthetic scene; the answers come from an oracle backend (d4rt/data/oracle_video.py: the scene's own tracks, each
window at its own scale, with noise), so the scores are neither 0 nor 1, through the same windows a model's would
take.
"""

import math
import statistics

import cv2
import numpy as np
import pytest

from d4rt.data.formats import read_tapvid3d
from d4rt.data.synthetic import Room
from d4rt.evaluation.metrics import tapvid3d_metrics
from tests.test_formats import JPEG_QUALITY

F, WINDOW, H, W, N = 11, 4, 48, 64, 24  # 11 frames: windows [0, 4) [3, 7) [6, 10) [7, 11) of the 4-frame model


def official_tapvid3d(gt_xyz, gt_visible, pred_xyz, pred_visible, fx, fy, query_t, scaling):
    """compute_tapvid3d_metrics (tapnet, order "t n", one video) re-derived by hand: loops over points, float64.

    gt_xyz, pred_xyz [F, N, 3] (the files' layout); gt_visible, pred_visible [F, N] bool; fx, fy at the metric
    resolution (256 on the short side); query_t [N]. Returns {"apd3d", "aj3d", "occlusion_acc"}.

    The official steps: norms sqrt(max(1e-12, |x|^2)) (NaN stays NaN); "median": scale = nanmedian of gt norms /
    nanmedian of pred norms, both over points visible in gt and pred (each median drops its own NaN);
    "per_trajectory": s_n = max(z_gt, 1e-12) / max(z_pred, 1e-12) at track n's query frame. A point is within d
    when |s p - g|^2 < (d z_g / sqrt(fx fy))^2 (a NaN compares False). pts_within_d = within and gt-visible over
    gt-visible; jaccard_d = TP / (gt-visible + FP), TP = within, gt-visible and predicted visible, FP = predicted
    visible and (gt-occluded or not within); occlusion accuracy = share of points whose visibilities agree.
    """
    frames, tracks = gt_visible.shape

    def norm(x):
        sq = math.fsum(float(c) ** 2 for c in x)
        return math.nan if math.isnan(sq) else math.sqrt(max(1e-12, sq))

    def nanmedian(values):
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    if scaling == "median":
        both = [(t, n) for t in range(frames) for n in range(tracks) if gt_visible[t, n] and pred_visible[t, n]]
        s = nanmedian([norm(gt_xyz[t, n]) for t, n in both]) / nanmedian([norm(pred_xyz[t, n]) for t, n in both])
        scale = [s] * tracks
    else:
        def floor(z):
            return z if math.isnan(z) else max(float(z), 1e-12)

        scale = [floor(gt_xyz[q, n, 2]) / floor(pred_xyz[q, n, 2]) for n, q in enumerate(query_t)]
    agree = sum(bool(gt_visible[t, n]) == bool(pred_visible[t, n]) for t in range(frames) for n in range(tracks))
    visible = sum(bool(v) for v in gt_visible.ravel())
    within_share, jaccard = [], []
    for d in (1, 2, 4, 8, 16):
        correct = tp = fp = 0
        for t in range(frames):
            for n in range(tracks):
                g, p = gt_xyz[t, n].astype(float), pred_xyz[t, n].astype(float) * scale[n]
                dist2 = math.fsum((p[i] - g[i]) ** 2 for i in range(3))
                within = dist2 < (d * g[2] / math.sqrt(fx * fy)) ** 2
                correct += within and gt_visible[t, n]
                tp += within and gt_visible[t, n] and pred_visible[t, n]
                fp += pred_visible[t, n] and (not gt_visible[t, n] or not within)
        within_share.append(correct / visible)
        jaccard.append(tp / (visible + fp))
    return {"apd3d": sum(within_share) / 5, "aj3d": sum(jaccard) / 5, "occlusion_acc": agree / (frames * tracks)}


def test_official_reference_by_hand_on_a_visible_nan_point():
    """One track, two frames: frame 0 exact, frame 1's ground truth NaN (visible) with a prediction of the same norm.
    By hand: median scale = |g0| / median(|g0|, |p1|) = 1 (the NaN drops out of the gt median only); frame 1 is
    never within: pts_within_d = 1 / 2, TP = 1, FP = 1 (predicted visible, not within): jaccard_d = 1 / (2 + 1)."""
    g0 = np.array([0.3, -0.2, 2.0])
    gt = np.array([[g0, [np.nan, np.nan, np.nan]]])  # [N=1, T=2, 3]
    pred = np.array([[g0, g0[::-1]]])
    vis = np.ones((1, 2), bool)
    for scaling in ("median", "per_trajectory"):
        ours = tapvid3d_metrics(pred, gt, vis, vis, 100.0, 120.0, scaling, query_t=np.array([0]))
        assert ours["apd3d"] == 0.5 and ours["aj3d"] == pytest.approx(1 / 3, abs=1e-15), scaling
        assert ours["occlusion_acc"] == 1.0 and ours["scale"] == pytest.approx(1.0, abs=1e-15)
        ref = official_tapvid3d(gt.transpose(1, 0, 2), vis.T, pred.transpose(1, 0, 2), vis.T, 100.0, 120.0, [0],
                                scaling)
        assert ref == {"apd3d": 0.5, "aj3d": pytest.approx(1 / 3, abs=1e-15), "occlusion_acc": 1.0}


def write_long_clip(seed: int, folder):
    """An 11-frame TAPVid-3D file (longer than the 4-frame windows) with tracks queried in every frame, one track
    never visible, and NaN points: 3 visible (one at its track's query frame), 2 occluded. -> path, arrays, clip"""
    clip = Room.random(seed, num_frames=F, aspect=W / H).render_clip(H, W)
    rng = np.random.default_rng(seed)
    uv = rng.uniform(0.05, 0.95, (N, 2))
    t_src = np.concatenate([np.arange(F), rng.integers(0, F, N - F)])  # every frame queried at least once
    frames = np.arange(F)
    ans = clip.query(np.repeat(uv, F, 0), np.repeat(t_src, F), np.tile(frames, N), np.tile(frames, N))
    cam = ans["xyz_cam"].reshape(N, F, 3).transpose(1, 0, 2).copy()  # [F, N, 3]
    vis = ans["visible"].reshape(N, F).T.copy()
    vis[:, -1] = False  # a track never visible: the official script scores it too (occlusion, false positives)
    nan_visible, nan_occluded = ([1, 5, 2], [0, 1, 2]), ([2, 8], [3, 4])  # (frames, tracks); track 2 queried at 2
    vis[nan_visible], vis[nan_occluded] = True, False
    cam[nan_visible], cam[nan_occluded] = np.nan, np.nan
    K = clip.K
    arrays = dict(
        images_jpeg_bytes=np.array([cv2.imencode(".jpg", f[..., ::-1], JPEG_QUALITY)[1].tobytes() for f in clip.rgb]),
        queries_xyt=np.concatenate([uv * [W - 1, H - 1] + 0.5, t_src[:, None]], -1).astype(np.float32),
        tracks_XYZ=cam.astype(np.float32), visibility=vis,
        fx_fy_cx_cy=np.array([K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5], np.float32),
    )
    path = folder / f"long_{seed}.npz"
    np.savez(path, **arrays)
    return path, arrays, clip


def oracle_scores(path, clip, seed: int):
    """score_track_set on the file with the oracle backend (its window scales and noise drawn from ``seed``): the
    same seed gives the same answers. -> (report, predictions, runtime)"""
    from d4rt.data.oracle_video import oracle_runtime
    from d4rt.evaluation.evaluate import EvalOptions, score_track_set
    from d4rt.runtime.video import prepare_clip

    tracks = read_tapvid3d(path)
    rt = oracle_runtime(clip, 32, WINDOW, noise=0.02, seed=seed)
    rt.backend.video = prepare_clip(tracks.rgb, 32).video[0]  # the JPEG-decoded frames it will be shown
    predictions = {}
    return score_track_set(rt, tracks, EvalOptions(pose_size=4), predictions), predictions, rt


def official_references(arrays, predictions) -> dict:
    """official_tapvid3d on the file's arrays as the official script reads them (fx, fy times 256 / min(H, W)),
    for both scalings."""
    fx, fy = arrays["fx_fy_cx_cy"][:2].astype(np.float64) * 256 / min(H, W)
    query_t = np.round(arrays["queries_xyt"][:, 2]).astype(int)
    return {scaling: official_tapvid3d(arrays["tracks_XYZ"], arrays["visibility"], predictions["tracks_XYZ"],
                                       predictions["visibility"], fx, fy, query_t, scaling)
            for scaling in ("median", "per_trajectory")}


def strictly_inside(refs) -> bool:
    return all(0.05 < r["apd3d"] < 0.95 and 0.05 < r["aj3d"] < 0.95 for r in refs.values())


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """A clip on which the oracle's scores lie strictly between 0 and 1 for both scalings, so that comparing them
    with the official formula means something. -> path, arrays, clip, oracle seed.

    Redrawn up to 20 times: on about 9 % of rooms median scaling scores 0 (a few tracks continued from their 2-D
    position at a window handover land on another surface; the median scale moves by more than the 16-pixel bound,
    d z / f = 7 % of the depth at this focal length), and comparing 0 with 0 would test nothing."""
    folder = tmp_path_factory.mktemp("tapvid3d")
    for _ in range(20):
        seed = int(np.random.randint(100_000))
        path, arrays, clip = write_long_clip(seed, folder)
        if strictly_inside(official_references(arrays, oracle_scores(path, clip, seed)[1])):
            print(f"scene seed {seed}")
            return path, arrays, clip, seed
    raise AssertionError("20 rooms in a row gave the oracle a score of 0 or 1: the test's scene has changed")


def test_every_frame_and_track_scored_as_the_official_metric(long_clip):
    """The oracle backend answers from the scene itself, each window at its own random scale, with 2 % noise along
    the ray: the scores lie strictly between 0 and 1, so the comparison with the official formula means something."""
    path, arrays, clip, seed = long_clip
    out, predictions, rt = oracle_scores(path, clip, seed)

    assert out["frames"] == [0, F] and out["frames_in_file"] == F and out["windows"] == 4
    assert [len(w) for w, _ in rt.backend.windows] == [WINDOW] * 4  # every window encoded, each of 4 frames
    assert out["tracks_scored"] == out["tracks_in_set"] == N
    assert out["gt_nan_visible"] == 3 and out["gt_nan_occluded"] == 2
    pred_xyz, pred_vis = predictions["tracks_XYZ"], predictions["visibility"]
    assert pred_xyz.shape == (F, N, 3) and pred_vis.shape == (F, N)
    assert np.isfinite(pred_xyz).all()  # every frame of every track answered by a window
    np.testing.assert_array_equal(predictions["track_ids"], np.arange(N))

    refs = official_references(arrays, predictions)
    assert strictly_inside(refs), refs  # the same seed, the same answers as when the fixture chose the room
    for scaling, ref in refs.items():
        # float64 sums in another order: equal to ~1e-16; 1e-12 still catches one point of the 1,320 (1 / 6,600)
        assert out[f"apd3d_{scaling}"] == pytest.approx(ref["apd3d"], abs=1e-12), scaling
        assert out[f"aj3d_{scaling}"] == pytest.approx(ref["aj3d"], abs=1e-12), scaling
        assert out["occlusion_acc"] == pytest.approx(ref["occlusion_acc"], abs=1e-12)


def test_evaluate_command_scores_whole_clips(long_clip, tmp_path, capsys):
    """The command reports every frame, every track and the NaN points it scored as misses; the predictions it
    saves in the official format score, by the official formula, exactly what it reports."""
    import json

    from d4rt.cli import main

    path, arrays, _, _ = long_clip
    saved = tmp_path / "predictions"
    rc = main(["evaluate", "--test-data", str(path), "--format", "tapvid3d", "--preset", "tiny", "--image-size",
               "32", "--device", "cpu", "--pose-size", "4", "--output", str(tmp_path / "eval.json"),
               "--save-predictions", str(saved)])
    assert rc == 0
    clip = json.loads((tmp_path / "eval.json").read_text())["per_clip"][0]
    assert clip["frames"] == [0, F] and clip["tracks_scored"] == N and clip["gt_nan_visible"] == 3
    printed = capsys.readouterr().out
    assert "every frame of each clip" in printed and f"tracks scored: {N} of {N}" in printed
    assert "3 visible (scored as misses" in printed
    with np.load(saved / path.name) as pred:
        assert pred["tracks_XYZ"].shape == (F, N, 3) and pred["visibility"].shape == (F, N)
        fx, fy = arrays["fx_fy_cx_cy"][:2].astype(np.float64) * 256 / min(H, W)
        ref = official_tapvid3d(arrays["tracks_XYZ"], arrays["visibility"], pred["tracks_XYZ"], pred["visibility"],
                                fx, fy, None, "median")
    assert clip["apd3d_median"] == pytest.approx(ref["apd3d"], abs=1e-12)
    assert clip["aj3d_median"] == pytest.approx(ref["aj3d"], abs=1e-12)
    assert clip["occlusion_acc"] == pytest.approx(ref["occlusion_acc"], abs=1e-12)


@pytest.mark.parametrize("extra, message", [
    (["--format", "clips"], "use it with --format tapvid3d"),
    (["--max-frames", "4"], "without --start / --max-frames"),
    (["--save-predictions", "tests"], "exists and is not an empty folder"),
])
def test_save_predictions_refuses_in_one_line(long_clip, tmp_path, capsys, extra, message):
    from d4rt.cli import main

    path = long_clip[0]
    argv = ["evaluate", "--test-data", str(path), "--format", "tapvid3d", "--save-predictions", str(tmp_path / "p")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
