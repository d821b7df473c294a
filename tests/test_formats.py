"""PointOdyssey and TAPVid-3D readers: small files written here in exactly those layouts (from a synthetic scene,
with plain numpy / OpenCV, not through the package) and read back."""

import pickle

import cv2
import numpy as np
import pytest

from d4rt.data.formats import read_pointodyssey, read_tapvid3d
from d4rt.data.synthetic import Room, invert_rigid

T, H, W, N = 6, 48, 64, 40
# best quality, no colour subsampling: the tiny textured frames would otherwise lose ~10 levels to chroma blur
JPEG_QUALITY = [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]


def assert_same_image(read, rgb):
    """JPEG is lossy: close to the truth, and far closer to it than to its channel-swapped self."""
    err = np.abs(read.astype(int) - rgb).mean()
    assert err < 2 and err < 0.2 * np.abs(read.astype(int) - rgb[..., ::-1]).mean(), err


@pytest.fixture(scope="module")
def scene_tracks():
    """A 64 x 48 clip and N tracks: world points over time, per-frame camera points, pixels, visibility. Every
    track stays in front of the camera in every frame (a point behind it has no pixel: the files would hold NaN
    where these tests expect none), chosen from 4 N candidates."""
    seed = int(np.random.randint(100_000))  # module-scoped: drawn in the first test's seeded context
    print(f"scene seed {seed}")
    scene = Room.random(seed, num_frames=T, aspect=W / H)
    clip = scene.render_clip(H, W)
    rng = np.random.default_rng(seed)
    M, frames = 4 * N, np.arange(T)
    uv, t_src = rng.uniform(0, 1, (M, 2)), rng.integers(0, T, M)
    ans = clip.query(np.repeat(uv, T, 0), np.repeat(t_src, T), np.tile(frames, M), np.tile(frames, M))
    in_front = (ans["xyz_cam"][:, 2].reshape(M, T) > 0).all(1) & np.isfinite(ans["uv_tgt"]).reshape(M, -1).all(1)
    chosen = np.flatnonzero(in_front)[:N]
    assert len(chosen) == N, f"room {seed}: only {len(chosen)} of {M} candidate tracks stay in front of the camera"
    pick = lambda a: a.reshape(M, T, -1)[chosen].transpose(1, 0, 2)  # noqa: E731  [M * T, k] -> [T, N, k]
    world, cam = pick(ans["xyz_world_tgt"]), pick(ans["xyz_cam"])
    pix = pick(ans["uv_tgt"]) * [W - 1, H - 1]
    vis = pick(ans["visible"])[..., 0]
    return clip, world, cam, pix, vis, uv[chosen], t_src[chosen]


def write_pointodyssey(root, clip, world, pix, vis):
    (root / "rgbs").mkdir(parents=True)
    (root / "depths").mkdir()
    for t in range(T):
        cv2.imwrite(str(root / "rgbs" / f"rgb_{t:05d}.jpg"), clip.rgb[t][..., ::-1], JPEG_QUALITY)
        cv2.imwrite(str(root / "depths" / f"depth_{t:05d}.png"),
                    np.round(clip.depth[t] / 1000.0 * 65535.0).astype(np.uint16))
    np.savez(root / "anno.npz", trajs_2d=pix.astype(np.float32), trajs_3d=world.astype(np.float32),
             visibs=vis, valids=np.ones_like(vis), intrinsics=np.tile(clip.K, (T, 1, 1)).astype(np.float32),
             extrinsics=invert_rigid(clip.T_wc).astype(np.float32))


def test_pointodyssey_round_trip(tmp_path, scene_tracks):
    clip, world, cam, pix, vis, _, _ = scene_tracks
    write_pointodyssey(tmp_path / "seq", clip, world, pix, vis)
    ts = read_pointodyssey(tmp_path / "seq")
    keep = vis.any(0)
    assert ts.tracks_cam.shape == (T, keep.sum(), 3)
    np.testing.assert_allclose(ts.tracks_cam, cam[:, keep], rtol=1e-4, atol=1e-4)  # float32 storage
    np.testing.assert_allclose(ts.T_wc, clip.T_wc, atol=1e-5)
    np.testing.assert_array_equal(ts.visible, vis[:, keep])
    np.testing.assert_allclose(ts.depth, clip.depth, atol=1000 / 65535 / 2 + 1e-6)  # uint16 quantisation
    assert_same_image(ts.rgb, clip.rgb)
    q = ts.queries_xyt
    t_first = np.argmax(vis[:, keep], 0)
    np.testing.assert_array_equal(q[:, 2], t_first)
    np.testing.assert_allclose(q[:, :2], pix[t_first, np.flatnonzero(keep)], atol=1e-3)
    assert ts.dropped == {"non_finite_entries": 0, "tracks_never_visible": int((~keep).sum())}


def test_pointodyssey_reads_only_the_frames_asked_for(tmp_path, scene_tracks):
    clip, world, cam, pix, vis, _, _ = scene_tracks
    write_pointodyssey(tmp_path / "seq", clip, world, pix, vis)
    for t in (0, 1, 5):  # frames outside the window are never opened
        (tmp_path / "seq" / "rgbs" / f"rgb_{t:05d}.jpg").unlink()
        (tmp_path / "seq" / "depths" / f"depth_{t:05d}.png").unlink()
    ts = read_pointodyssey(tmp_path / "seq", start=2, max_frames=3)
    keep = vis[2:5].any(0)
    assert ts.rgb.shape[0] == 3 and ts.start == 2 and ts.frames_in_file == T
    np.testing.assert_allclose(ts.tracks_cam, cam[2:5, keep], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ts.T_wc, clip.T_wc[2:5], atol=1e-5)
    np.testing.assert_allclose(ts.depth, clip.depth[2:5], atol=1000 / 65535 / 2 + 1e-6)
    np.testing.assert_array_equal(ts.queries_xyt[:, 2], np.argmax(vis[2:5, keep], 0))  # counted from start
    with pytest.raises(ValueError, match="start=6"):
        read_pointodyssey(tmp_path / "seq", start=6)


def test_pointodyssey_non_finite_tracks_and_0d_placeholder(tmp_path, scene_tracks):
    """Real files hold NaN / inf in trajs_2d: those entries become invalid; a track left with no valid visible
    frame is dropped and counted. A trajs_3d stored as a 0-d NaN placeholder gives a set without 3-D tracks."""
    clip, world, cam, pix, vis, _, _ = scene_tracks
    vis = vis.copy()
    vis[:, :3] = True
    pix = pix.copy()
    pix[:, 0] = np.nan  # track 0: no finite entry at all -> dropped
    pix[2, 1] = np.inf  # track 1: one bad frame -> that entry invalid
    world = world.copy()
    world[4, 2] = np.nan  # track 2: one bad 3-D entry
    write_pointodyssey(tmp_path / "seq", clip, world, pix, vis)
    ts = read_pointodyssey(tmp_path / "seq")
    keep = vis.any(0)
    keep[0] = False
    assert ts.dropped == {"non_finite_entries": T + 2, "tracks_never_visible": int((~keep).sum())}
    assert ts.tracks_cam.shape[1] == keep.sum() and np.isfinite(ts.tracks_cam).all()
    assert not ts.valid[2, 0] and not ts.visible[2, 0] and not ts.valid[4, 1] and ts.valid[[0, 1, 3, 5], 0].all()
    np.testing.assert_allclose(ts.tracks_cam[ts.valid], cam[:, keep][ts.valid], rtol=1e-4, atol=1e-4)

    np.savez(tmp_path / "seq" / "anno.npz", trajs_2d=pix.astype(np.float32), trajs_3d=np.array(np.nan),
             visibs=vis, valids=np.ones_like(vis), intrinsics=np.tile(clip.K, (T, 1, 1)).astype(np.float32),
             extrinsics=invert_rigid(clip.T_wc).astype(np.float32))
    ts = read_pointodyssey(tmp_path / "seq")
    assert ts.tracks_cam is None and ts.depth.shape == (T, H, W) and ts.T_wc.shape == (T, 4, 4)
    np.savez(tmp_path / "seq" / "anno.npz", trajs_2d=pix.astype(np.float32), trajs_3d=world[:, :5],
             visibs=vis, valids=np.ones_like(vis), intrinsics=np.tile(clip.K, (T, 1, 1)).astype(np.float32),
             extrinsics=invert_rigid(clip.T_wc).astype(np.float32))
    with pytest.raises(ValueError, match=r"anno.npz: trajs_3d has shape \[6, 5, 3\]"):
        read_pointodyssey(tmp_path / "seq")


def test_pointodyssey_errors(tmp_path, scene_tracks):
    clip, world, cam, pix, vis, _, _ = scene_tracks
    with pytest.raises(FileNotFoundError, match="anno.npz"):
        read_pointodyssey(tmp_path)
    write_pointodyssey(tmp_path / "seq", clip, world, pix, vis)
    (tmp_path / "seq" / "depths" / "depth_00003.png").unlink()
    with pytest.raises(FileNotFoundError, match="depth"):
        read_pointodyssey(tmp_path / "seq")
    np.savez(tmp_path / "seq" / "anno.npz", trajs_2d=pix)
    with pytest.raises(ValueError, match="lacks"):
        read_pointodyssey(tmp_path / "seq")


def tapvid3d_arrays(clip, cam, vis, uv, t_src, extrinsics=False):
    """As tapnet's generators write a clip: pixel coordinates with the first pixel's centre at 0.5 (principal
    point W / 2 for a centred camera), so the synthetic render's integer-centred x, cx shift by 0.5."""
    jpegs = [cv2.imencode(".jpg", f[..., ::-1], JPEG_QUALITY)[1].tobytes() for f in clip.rgb]
    K = clip.K
    queries = np.concatenate([uv * [W - 1, H - 1] + 0.5, t_src[:, None]], -1)
    arrays = dict(queries_xyt=queries.astype(np.float32), tracks_XYZ=cam.astype(np.float32), visibility=vis,
                  fx_fy_cx_cy=np.array([K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5], np.float32))
    if extrinsics:
        arrays["extrinsics_w2c"] = invert_rigid(clip.T_wc).astype(np.float32)
    return jpegs, arrays


@pytest.mark.parametrize("storage", ["fixed_width", "object"])
def test_tapvid3d_round_trip(tmp_path, scene_tracks, storage):
    clip, _, cam, pix, vis, uv, t_src = scene_tracks
    jpegs, arrays = tapvid3d_arrays(clip, cam, vis, uv, t_src)
    images = np.array(jpegs) if storage == "fixed_width" else np.array(jpegs + [None], dtype=object)[:-1]
    assert images.dtype.kind == ("S" if storage == "fixed_width" else "O")
    np.savez(tmp_path / "clip.npz", images_jpeg_bytes=images, **arrays)
    ts = read_tapvid3d(tmp_path / "clip.npz")
    np.testing.assert_allclose(ts.tracks_cam, cam, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ts.visible, vis)
    np.testing.assert_allclose(ts.K[0], clip.K + [[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]],
                               rtol=1e-6)
    front = cam[..., 2] > 1e-3
    np.testing.assert_allclose(ts.tracks_2d[front], pix[front] + 0.5, atol=1e-3)  # reprojected with fx, fy, cx, cy
    np.testing.assert_allclose(ts.queries_xyt[:, :2] - ts.pixel_centre, uv * [W - 1, H - 1], atol=1e-4)
    assert ts.T_wc is None and ts.rgb.shape == (T, H, W, 3)
    assert_same_image(ts.rgb, clip.rgb)


def test_tapvid3d_extrinsics_and_frame_window(tmp_path, scene_tracks):
    clip, _, cam, _, vis, uv, t_src = scene_tracks
    jpegs, arrays = tapvid3d_arrays(clip, cam, vis, uv, t_src, extrinsics=True)
    jpegs[0] = b"not a jpeg"  # outside the window: never decoded
    np.savez(tmp_path / "clip.npz", images_jpeg_bytes=np.array(jpegs), **arrays)
    ts = read_tapvid3d(tmp_path / "clip.npz", start=1, max_frames=4)
    np.testing.assert_allclose(ts.T_wc, clip.T_wc[1:5], atol=1e-5)
    np.testing.assert_allclose(ts.tracks_cam, cam[1:5], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ts.queries_xyt[:, 2], t_src - 1)
    assert ts.rgb.shape == (4, H, W, 3) and ts.start == 1
    with pytest.raises(ValueError, match=r"images_jpeg_bytes\[0\] is not a decodable JPEG"):
        read_tapvid3d(tmp_path / "clip.npz")
    arrays["visibility"] = vis[:, :-1]
    np.savez(tmp_path / "bad.npz", images_jpeg_bytes=np.array(jpegs), **arrays)
    with pytest.raises(ValueError, match=r"bad.npz: visibility has shape"):
        read_tapvid3d(tmp_path / "bad.npz")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_tapvid3d_refuses_pickled_objects(tmp_path, scene_tracks, capsys):
    clip, _, cam, _, vis, uv, t_src = scene_tracks
    jpegs, arrays = tapvid3d_arrays(clip, cam, vis, uv, t_src)
    evil = np.empty(T, dtype=object)
    evil[:] = [Payload()] * T
    np.savez(tmp_path / "evil.npz", images_jpeg_bytes=evil, **arrays)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_tapvid3d(tmp_path / "evil.npz")
    assert "must never run" not in capsys.readouterr().out
    np.savez(tmp_path / "partial.npz", images_jpeg_bytes=np.array(jpegs), tracks_XYZ=arrays["tracks_XYZ"])
    with pytest.raises(ValueError, match="lacks"):
        read_tapvid3d(tmp_path / "partial.npz")
    with pytest.raises(FileNotFoundError):
        read_tapvid3d(tmp_path / "none.npz")


def test_evaluate_tracks_on_tapvid3d(tmp_path, scene_tracks, tiny_config):
    """The evaluation path runs on a TAPVid-3D file with extrinsics: track and pose metrics, frames recorded."""
    import torch

    from d4rt import D4RT
    from d4rt.evaluation.evaluate import EvalOptions, evaluate_tracks

    clip, _, cam, _, vis, uv, t_src = scene_tracks
    jpegs, arrays = tapvid3d_arrays(clip, cam, vis, uv, t_src, extrinsics=True)
    np.savez(tmp_path / "clip.npz", images_jpeg_bytes=np.array(jpegs), **arrays)
    model = D4RT(tiny_config.replace(image_size=32, num_frames=4)).eval()
    out = evaluate_tracks(model, read_tapvid3d(tmp_path / "clip.npz", 0, 4), EvalOptions(pose_size=4))
    for k in ("apd3d_median", "aj3d_median", "apd3d_per_trajectory", "aj3d_per_trajectory", "occlusion_acc"):
        assert 0.0 <= out[k] <= 1.0, k
    assert out["pose_ate"] >= 0 and out["pose_rpe_rot_deg"] >= 0 and out["frames"] == [0, 4]
    assert out["tracks_scored"] == int((t_src < 4).sum())  # every track queried in the frames read, as tapnet
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("fmt", ["tapvid3d", "pointodyssey"])
def test_evaluate_command_on_public_layouts(tmp_path, scene_tracks, fmt, capsys):
    """`d4rt evaluate` on files written as the datasets' writers write them (PointOdyssey with NaN tracks, as real
    files have) prints every metric and writes them."""
    import json

    from d4rt.cli import main

    clip, world, cam, pix, vis, uv, t_src = scene_tracks
    if fmt == "tapvid3d":
        jpegs, arrays = tapvid3d_arrays(clip, cam, vis, uv, t_src, extrinsics=True)
        (tmp_path / "data").mkdir()
        np.savez(tmp_path / "data" / "a.npz", images_jpeg_bytes=np.array(jpegs), **arrays)
    else:
        pix = pix.copy()
        pix[:, 0] = np.nan
        write_pointodyssey(tmp_path / "data" / "seq_a", clip, world, pix, vis)
    rc = main(["evaluate", "--test-data", str(tmp_path / "data"), "--format", fmt, "--preset", "tiny",
               "--image-size", "32", "--device", "cpu", "--pose-size", "4", "--depth-stride", "8",
               "--output", str(tmp_path / "eval.json")])
    assert rc == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    expected = {"apd3d_median", "aj3d_median", "apd3d_per_trajectory", "aj3d_per_trajectory", "occlusion_acc",
                "pose_ate", "pose_rpe_trans", "pose_rpe_rot_deg"}
    if fmt == "pointodyssey":
        expected |= {"depth_abs_rel_frame_median", "depth_delta_1.25_frame_median", "depth_abs_rel_clip_median",
                     "depth_delta_1.25_clip_median", "depth_abs_rel_best_constant"}
        assert result["per_clip"][0]["dropped_non_finite_entries"] == T
    assert set(result["mean"]) == expected and len(result["per_clip"]) == 1
    printed = capsys.readouterr().out
    assert all(k in printed for k in expected) and "every frame of each clip" in printed
