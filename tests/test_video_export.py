"""The dynamic frame axis: one export takes any even frame count from 2 to T (parity for T' in {2, 6, T} against
the eager model on the same frames), the graphs name their dynamic dims, the manifest records the range."""

import numpy as np
import onnx
import pytest
import torch

from d4rt.runtime import load
from tests.exported import small_export

T, S = 8, 16


@pytest.fixture(scope="module")
def small():
    model, directory = small_export()
    return model, directory, load(directory, backend="onnxruntime-cpu")


def test_manifest_and_graphs_carry_the_frame_range(small):
    _, directory, rt = small
    assert rt.manifest.frame_range == (2, T) and rt.frame_range == (2, T)
    video = onnx.load(str(directory / "encoder.onnx"), load_external_data=False).graph.input[0]
    assert [d.dim_param or d.dim_value for d in video.type.tensor_type.shape.dim] == [1, "T", 3, S, S]
    keys = onnx.load(str(directory / "decoder.onnx"), load_external_data=False).graph.input[1]
    assert keys.type.tensor_type.shape.dim[3].dim_param == "M"


@pytest.mark.parametrize("frames", [2, 6, T])
def test_any_even_frame_count_matches_the_model(small, frames):
    model, _, rt = small
    clip = np.random.randint(0, 256, (frames, 20, 28, 3), dtype=np.uint8)
    scene = rt.encode(clip)
    assert scene.num_frames == frames
    n = 200
    uv = np.random.rand(n, 2).astype(np.float32)
    t = np.random.randint(0, frames, (3, n))
    res = rt.query(scene, uv, t[0], t[1], t[2])
    with torch.no_grad():
        tt = torch.from_numpy(t).long()[:, None]
        ref = model(torch.from_numpy(scene.video), torch.from_numpy(uv)[None], tt[0], tt[1], tt[2],
                    torch.tensor([scene.aspect_ratio]))
    np.testing.assert_allclose(res["xyz"], ref["xyz"][0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["confidence"], torch.sigmoid(ref["confidence"][0]).numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=rf"expected \[0, {frames}\) for this clip"):
        rt.query(scene, uv[:1], frames, 0, 0)


def test_odd_and_single_frame_counts(small):
    _, _, rt = small
    with pytest.warns(UserWarning, match="7 frames; .*dropping the last 1 frame .*rt.encode_video keeps every"):
        assert rt.encode(np.random.randint(0, 256, (7, 20, 20, 3), dtype=np.uint8)).num_frames == 6
    one = np.random.randint(0, 256, (1, 20, 20, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"pass it twice, frames\[\[0, 0\]\]"):
        rt.encode(one)
    assert rt.encode(one[[0, 0]]).num_frames == 2  # the advice works
