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
    """A 64 x 48 clip and N tracks: world points over time, per-frame camera points, pixels, visibility."""
    seed = int(np.random.SeedSequence().entropy % 100_000)
    print(f"scene seed {seed}")
    scene = Room.random(seed, num_frames=T, aspect=W / H)
    clip = scene.render_clip(H, W)
    rng = np.random.default_rng(seed)
    uv = rng.uniform(0, 1, (N, 2))
    t_src = rng.integers(0, T, N)
    frames = np.arange(T)
    ans = clip.query(np.repeat(uv, T, 0), np.repeat(t_src, T), np.tile(frames, N), np.tile(frames, N))
    world = ans["xyz_world_tgt"].reshape(N, T, 3).transpose(1, 0, 2)  # [T, N, 3]
    cam = ans["xyz_cam"].reshape(N, T, 3).transpose(1, 0, 2)
    pix = (ans["uv_tgt"] * [W - 1, H - 1]).reshape(N, T, 2).transpose(1, 0, 2)
    vis = ans["visible"].reshape(N, T).T
    return clip, world, cam, pix, vis, uv, t_src


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
    assert read_pointodyssey(tmp_path / "seq", max_frames=3).rgb.shape[0] == 3


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


def tapvid3d_arrays(clip, cam, vis, uv, t_src):
    jpegs = [cv2.imencode(".jpg", f[..., ::-1], JPEG_QUALITY)[1].tobytes() for f in clip.rgb]
    K = clip.K
    queries = np.concatenate([uv * [W - 1, H - 1], t_src[:, None]], -1)
    return jpegs, dict(queries_xyt=queries.astype(np.float32), tracks_XYZ=cam.astype(np.float32), visibility=vis,
                       fx_fy_cx_cy=np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], np.float32))


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
    np.testing.assert_allclose(ts.K[0], clip.K, rtol=1e-6)
    front = cam[..., 2] > 1e-3
    np.testing.assert_allclose(ts.tracks_2d[front], pix[front], atol=1e-3)  # reprojected with fx, fy, cx, cy
    np.testing.assert_allclose(ts.queries_xyt[:, :2], uv * [W - 1, H - 1], atol=1e-4)
    assert ts.T_wc is None and ts.rgb.shape == (T, H, W, 3)
    assert_same_image(ts.rgb, clip.rgb)


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
    """The evaluation path runs on a TAPVid-3D file; the metric sees a perfect oracle as perfect."""
    import torch

    from d4rt import D4RT
    from d4rt.evaluation.evaluate import evaluate_tracks
    from d4rt.evaluation.metrics import apd3d

    clip, _, cam, _, vis, uv, t_src = scene_tracks
    jpegs, arrays = tapvid3d_arrays(clip, cam, vis, uv, t_src)
    np.savez(tmp_path / "clip.npz", images_jpeg_bytes=np.array(jpegs), **arrays)
    ts = read_tapvid3d(tmp_path / "clip.npz")
    model = D4RT(tiny_config.replace(image_size=32, num_frames=4)).eval()
    out = evaluate_tracks(model, ts)
    assert 0.0 <= out["apd3d"] <= 1.0 and 0.0 <= out["occlusion_acc"] <= 1.0
    assert apd3d(ts.tracks_cam, ts.tracks_cam, ts.visible, 50.0, 50.0)["apd3d"] == 1.0
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("fmt", ["tapvid3d", "pointodyssey"])
def test_evaluate_command_on_public_layouts(tmp_path, scene_tracks, fmt):
    import argparse
    import json

    from d4rt.cli import evaluate as command_evaluate
    from d4rt.evaluation.evaluate import evaluate

    clip, world, cam, pix, vis, uv, t_src = scene_tracks
    if fmt == "tapvid3d":
        jpegs, arrays = tapvid3d_arrays(clip, cam, vis, uv, t_src)
        (tmp_path / "data").mkdir()
        np.savez(tmp_path / "data" / "a.npz", images_jpeg_bytes=np.array(jpegs), **arrays)
    else:
        write_pointodyssey(tmp_path / "data" / "seq_a", clip, world, pix, vis)
    parser = argparse.ArgumentParser()
    command_evaluate.add_arguments(parser)
    args = parser.parse_args(["--test_data_path", str(tmp_path / "data"), "--format", fmt, "--accelerator", "cpu",
                              "--devices", "1", "--output", str(tmp_path / "eval.json")])
    assert evaluate(args) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["mean"]) == {"apd3d", "occlusion_acc"} and len(result["per_clip"]) == 1
