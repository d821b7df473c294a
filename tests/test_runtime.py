"""The runtime on a real tiny export through ONNX Runtime (CPU): results against the eager model, batching,
the engine-profile split, scenes side by side, video files, the torch backend, and bad input."""

import numpy as np
import pytest
import torch

from d4rt.runtime import Runtime, load
from tests.exported import exported

T = 4


@pytest.fixture(scope="module")
def tiny():
    model, directory = exported("tiny", T, "fp32")
    return model, directory, load(directory, backend="onnxruntime-cpu")


def random_frames(h=96, w=160, frames=T):
    return np.random.randint(0, 256, (frames, h, w, 3), dtype=np.uint8)


def smooth_frames(frames, h, w):
    """Frames of random smooth colour waves, a different phase per frame: [frames, h, w, 3] uint8."""
    y, x = np.mgrid[0:h, 0:w]
    phase = np.random.rand(frames, 3) * 2 * np.pi
    x, y, phase = x[None, :, :, None], y[None, :, :, None], phase[:, None, None]
    waves = np.sin(x / 9.0 + phase) * np.cos(y / 7.0 - phase)
    return (127.5 + 100 * waves).astype(np.uint8)


def random_queries(n, frames=T):
    return np.random.rand(n, 2).astype(np.float32), np.random.randint(0, frames, (3, n))


def test_auto_picks_onnxruntime_cpu_here(tiny):
    _, directory, rt = tiny
    assert rt.name == "onnxruntime-cpu" and load(directory).name == "onnxruntime-cpu"
    assert (rt.num_frames, rt.image_size) == (T, 128)


def test_query_matches_the_eager_model(tiny):
    model, _, rt = tiny
    scene = rt.encode(random_frames(h=90, w=160))
    assert scene.aspect_ratio == pytest.approx(160 / 90) and scene.original_size == (90, 160)
    assert scene.frames.shape == (T, 128, 128, 3) and scene.video.shape == (1, T, 3, 128, 128)
    uv, t = random_queries(300)
    res = rt.query(scene, uv, t[0], t[1], t[2])
    with torch.no_grad():
        tt = torch.from_numpy(t).long()[:, None]
        ref = model(torch.from_numpy(scene.video), torch.from_numpy(uv)[None], tt[0], tt[1], tt[2],
                    torch.tensor([scene.aspect_ratio]))
    for name, key in [("xyz", "xyz"), ("uv_tgt", "uv"), ("displacement", "displacement"), ("normal", "normal")]:
        np.testing.assert_allclose(res[name], ref[key][0].numpy(), rtol=1e-4, atol=1e-5)
    for name in ("visibility", "confidence"):  # probabilities: the sigmoid of the model's logits
        np.testing.assert_allclose(res[name], torch.sigmoid(ref[name][0]).numpy(), rtol=1e-5, atol=1e-6)
        assert res[name].min() >= 0 and res[name].max() <= 1


def test_batched_equals_unbatched(tiny):
    # ONNX Runtime's kernels round differently per batch size: whole float32 steps (~1.2e-7 at 1) on outputs that
    # can be ~0.01; 1e-5 / 1e-6 is ~8 such steps, and a real batching bug is off by 1e-2 or more
    _, _, rt = tiny
    scene = rt.encode(random_frames())
    uv, t = random_queries(1001)
    whole = rt.query(scene, uv, t[0], t[1], t[2], batch_size=1001)
    for batch in (1000, 64, 7):  # the last batch ragged each time
        split = rt.query(scene, uv, t[0], t[1], t[2], batch_size=batch)
        for name in whole:
            np.testing.assert_allclose(split[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=f"{name} @ {batch}")


class ProfileLimited:
    """A real backend behind an engine-like profile [min_queries, max_queries]; records the batches it gets."""

    def __init__(self, backend, min_queries, max_queries):
        self.inner, self.min_queries, self.max_queries = backend, min_queries, max_queries
        self.name, self.batches = backend.name, []

    def encode(self, video, aspect_ratio):
        return self.inner.encode(video, aspect_ratio)

    def decode(self, state, uv, t):
        n = uv.shape[1]
        assert self.min_queries <= n <= self.max_queries, n
        self.batches.append(n)
        return self.inner.decode(state, uv, t)


def test_batches_above_the_profile_are_split_and_small_ones_padded(tiny):
    _, _, rt = tiny
    limited = Runtime(ProfileLimited(rt.backend, 8, 50), T, rt.image_size)
    frames = random_frames()
    uv, t = random_queries(203)
    got = limited.query(limited.encode(frames), uv, t[0], t[1], t[2], batch_size=8192)
    ref = rt.query(rt.encode(frames), uv, t[0], t[1], t[2])
    assert limited.backend.batches == [50, 50, 50, 50, 8]  # 203 = 4 x 50 + 3, the 3 padded to the minimum 8
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6)
    one = limited.query(limited.encode(frames), uv[:1], t[0, :1], t[1, :1], t[2, :1])
    np.testing.assert_allclose(one["xyz"], ref["xyz"][:1], rtol=1e-5, atol=1e-6)


def test_scenes_live_side_by_side(tiny):
    _, _, rt = tiny
    a, b = rt.encode(random_frames()), rt.encode(random_frames(w=64))
    uv, t = random_queries(50)
    before = rt.query(a, uv, t[0], t[1], t[2])
    rt.query(b, uv, t[0], t[1], t[2])
    after = rt.query(a, uv, t[0], t[1], t[2])
    np.testing.assert_array_equal(before["xyz"], after["xyz"])
    assert not np.allclose(before["xyz"], rt.query(b, uv, t[0], t[1], t[2])["xyz"])
    other = Runtime(rt.backend, T, rt.image_size)
    with pytest.raises(ValueError, match="encoded by another runtime"):
        other.query(a, uv, t[0], t[1], t[2])


def test_torch_backend_matches_onnxruntime(tiny):
    _, directory, rt = tiny
    torch_rt = load(directory, backend="torch")  # the checkpoint the manifest names
    assert torch_rt.name == "torch" and torch_rt.num_frames == T
    frames = random_frames()
    uv, t = random_queries(200)
    a = rt.query(rt.encode(frames), uv, t[0], t[1], t[2])
    b = torch_rt.query(torch_rt.encode(frames), uv, t[0], t[1], t[2])
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5)
    direct = load(directory / "checkpoint", backend="torch")  # a save_pretrained directory works too
    assert direct.num_frames == 16  # the checkpoint's own clip length


def test_aspect_ratio_override_and_in_memory_model(tiny):
    """Frames already resized keep the original's aspect ratio; a model in memory runs through the same runtime."""
    from d4rt.runtime.backend_torch import TorchBackend

    model, _, rt = tiny
    square = random_frames(h=128, w=128)
    wide = rt.encode(square, aspect_ratio=16 / 9)
    assert wide.aspect_ratio == pytest.approx(16 / 9)
    uv, t = random_queries(100)
    res = rt.query(wide, uv, t[0], t[1], t[2])
    plain = rt.query(rt.encode(square), uv, t[0], t[1], t[2])
    assert not np.allclose(res["xyz"], plain["xyz"], atol=1e-6)  # the aspect token reaches the outputs
    in_memory = Runtime(TorchBackend(model), T, model.config.image_size)
    ref = in_memory.query(in_memory.encode(square, aspect_ratio=16 / 9), uv, t[0], t[1], t[2])
    for name in res:
        np.testing.assert_allclose(res[name], ref[name], rtol=1e-4, atol=1e-5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="aspect_ratio must be a positive width / height"):
            rt.encode(square, aspect_ratio=bad)


def test_video_file_input(tiny, tmp_path):
    import cv2

    from d4rt.runtime.video import read_video

    _, _, rt = tiny
    frames = smooth_frames(2 * T + 1, 72, 96)  # smooth, so the lossy codec keeps them recognisable
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 72))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    decoded = read_video(path)
    assert decoded.shape == (2 * T + 1, 72, 96, 3)
    distance = np.abs(decoded[:, None].astype(int) - frames[None]).mean(axis=(2, 3, 4))  # [decoded, original]
    assert (distance.argmin(1) == np.arange(len(frames))).all() and distance.diagonal().max() < 8
    with pytest.raises(ValueError, match="more than the 4 frames"):
        rt.encode(path)
    scene = rt.encode(path, start=1, stride=2)  # frames 1, 3, 5, 7
    from_array = rt.encode(decoded, start=1, stride=2)
    np.testing.assert_array_equal(scene.frames, from_array.frames)
    assert scene.aspect_ratio == pytest.approx(96 / 72)
    assert rt.encode(path, max_frames=T).frames.shape[0] == T
    with pytest.warns(UserWarning, match="3 frames; .* dropping the last 1 frame"):
        assert rt.encode(path, start=6).num_frames == 2  # 3 frames left: an odd count drops its last
    with pytest.raises(ValueError, match="1 frame, these engines need at least 2 .*pass it twice"):
        rt.encode(path, start=8)
