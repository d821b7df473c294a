"""Bad input gets a ValueError naming the tensor, what it was and what was expected. Nothing is clamped."""

import pytest
import torch

from d4rt import D4RT
from tests.conftest import make_queries


@pytest.fixture(scope="module")
def model(tiny_config):
    return D4RT(tiny_config).eval()


def good(model, frames=4, n=5):
    S = model.config.image_size
    return torch.rand(1, frames, 3, S, S), *make_queries(1, n, frames)


@pytest.mark.parametrize(
    "make_video, message",
    [
        (lambda S: torch.rand(4, 3, S, S), "video must have 5 dims"),
        (lambda S: torch.rand(1, 4, 4, S, S), "3 \\(RGB\\) channels"),
        (lambda S: torch.rand(1, 4, 3, S, S + 2), "resize the frames"),
        (lambda S: (torch.rand(1, 4, 3, S, S) * 255).to(torch.uint8), "must be floating point"),
        (lambda S: torch.rand(1, 3, 3, S, S), "multiple of the tubelet"),
        (lambda S: torch.rand(1, 18, 3, S, S), "more than this model's 16"),
        (lambda S: torch.rand(1, 4, 3, S, S) * 255, "expected \\[0, 1\\]"),
        (lambda S: torch.rand(1, 4, 3, S, S).index_put_((torch.tensor(0),) * 5, torch.tensor(float("nan"))), "NaN"),
    ],
)
def test_bad_video(model, make_video, message):
    with pytest.raises(ValueError, match=message):
        model.encode(make_video(model.config.image_size))


def test_bad_aspect_ratio(model):
    video = good(model)[0]
    with pytest.raises(ValueError, match="finite and > 0"):
        model.encode(video, -1.0)
    with pytest.raises(ValueError, match="aspect_ratio must be \\[B\\]"):
        model.encode(video, torch.ones(3))


def test_bad_queries(model):
    video, uv, ts, tt, tc = good(model)
    with torch.no_grad():
        memory = model.encode(video)
    cases = [
        (dict(uv=uv.clone().index_put_((torch.tensor(0),) * 3, torch.tensor(1.01))), "uv has values in"),
        (dict(uv=uv.clone().index_put_((torch.tensor(0),) * 3, torch.tensor(-0.01))), "uv has values in"),
        (dict(uv=uv.masked_fill(torch.rand_like(uv) < 0.3, float("nan")).index_put_((torch.tensor(0),) * 3, torch.tensor(float("nan")))), "uv contains NaN"),
        (dict(uv=uv[..., :1]), "uv must be \\[B, N, 2\\]"),
        (dict(t_src=ts + 4), "t_src has frame indices in .* expected \\[0, 4\\)"),
        (dict(t_tgt=tt - 5), "t_tgt has frame indices"),
        (dict(t_cam=tc.float()), "t_cam must be an integer tensor"),
        (dict(t_cam=tc[:, :3]), "t_cam must be \\[B, N\\]"),
        (dict(uv=uv.expand(2, -1, -1)), "uv has batch 2"),
        (dict(uv=uv[:, :0], t_src=ts[:, :0], t_tgt=tt[:, :0], t_cam=tc[:, :0]), "N = 0 queries"),
        (dict(t_src=2), "t_src must be a torch.Tensor"),
        (dict(uv=uv.numpy()), "uv must be a torch.Tensor"),
    ]
    base = dict(uv=uv, t_src=ts, t_tgt=tt, t_cam=tc)
    for change, message in cases:
        args = {**base, **change}
        with pytest.raises(ValueError, match=message):
            model.decode(memory, video, args["uv"], args["t_src"], args["t_tgt"], args["t_cam"])


def test_memory_of_another_clip_is_refused(model):
    video, uv, ts, tt, tc = good(model, frames=4)
    with torch.no_grad():
        memory = model.encode(video)
    longer = torch.rand(1, 6, 3, model.config.image_size, model.config.image_size)
    with pytest.raises(ValueError, match="encode this video"):
        model.decode(memory, longer, uv, ts, tt, tc)
