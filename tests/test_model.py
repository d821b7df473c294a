import math

import pytest
import torch
import torch.nn.functional as F

from d4rt import D4RT, D4RTConfig
from d4rt.models.attention import attend
from d4rt.models.encoder import sinusoidal_position_embedding
from d4rt.models.query_embedding import fourier_features, sample_rgb_patches
from tests.conftest import make_queries

OUTPUT_SHAPES = {"xyz": 3, "uv": 2, "visibility": None, "displacement": 3, "normal": 3, "confidence": None}


@pytest.fixture(scope="module")
def model(tiny_config):
    return D4RT(tiny_config.replace()).eval()


def clip(cfg, batch=1, frames=None):
    return torch.rand(batch, frames or cfg.num_frames, 3, cfg.image_size, cfg.image_size)


def test_shapes_and_steps(model):
    cfg = model.config
    video = clip(cfg, batch=2, frames=8)
    uv, ts, tt, tc = make_queries(2, 37, 8)
    with torch.no_grad():
        memory = model.encode(video, torch.tensor([1.5, 0.75]))
        assert memory.shape == (2, cfg.memory_tokens(8), cfg.dec_dim) == (2, 4 * 64 + 1, 192)
        keys, values = model.memory_kv(memory)
        assert keys.shape == values.shape == (cfg.dec_depth, 2, cfg.dec_heads, memory.shape[1], cfg.dec_head_dim)
        out = model.decode(memory, video, uv, ts, tt, tc)
        whole = model(video, uv, ts, tt, tc, aspect_ratio=torch.tensor([1.5, 0.75]))
    for name, last in OUTPUT_SHAPES.items():
        assert out[name].shape == ((2, 37, last) if last else (2, 37))
        torch.testing.assert_close(out[name], whole[name])


def test_tiny_preset_at_full_size_on_the_cpu():
    """The tiny preset as it ships: 8 frames at 256 x 256 and 4,096 queries, on the CPU, against the same weights
    in float64 with the explicit (eager) attention answering 64 of the queries on their own (queries are
    independent: a query's answer must not depend on the batch around it)."""
    import copy

    model = D4RT(D4RTConfig.preset("tiny")).eval()
    assert model.config.image_size == 256
    video = clip(model.config, frames=8)
    uv, ts, tt, tc = make_queries(1, 4096, 8)
    with torch.no_grad():
        out = model(video, uv, ts, tt, tc, aspect_ratio=16 / 9)
    assert out["xyz"].shape == (1, 4096, 3) and torch.isfinite(out["xyz"]).all()
    reference = copy.deepcopy(model).double()
    reference.set_attention("eager")
    pick = torch.randperm(4096)[:64]
    with torch.no_grad():
        ref = reference(video.double(), uv[:, pick].double(), ts[:, pick], tt[:, pick], tc[:, pick],
                        aspect_ratio=16 / 9)
    for name in OUTPUT_SHAPES:
        # float32 rounding (2^-24 per operation) through encoder and decoder: 2.6e-7 .. 4.3e-7 measured over 3
        # draws; 1e-5 leaves a 20x margin and still fails on any wrong term (a dropped bias is O(1e-2) or more)
        rel = ((out[name][:, pick].double() - ref[name]).norm() / ref[name].norm()).item()
        assert rel < 1e-5, (name, rel)


def test_attention_is_a_run_time_choice(tiny_config):
    """The backend is an argument of the model, sdpa by default; switching it leaves the config alone."""
    model = D4RT(tiny_config)
    assert model.attention == "sdpa" and not hasattr(model.config, "attention")
    config = model.config.to_dict()
    model.set_attention("eager")
    assert model.config.to_dict() == config and model.attention == "eager"
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"eager"}
    with pytest.raises(ValueError, match="attention='flash' is not an attention backend"):
        D4RT(tiny_config, attention="flash")
    with pytest.raises(ValueError, match="attention='flash'"):
        model.set_attention("flash")


def test_eager_and_sdpa_agree(model):
    video = clip(model.config, frames=16)
    uv, ts, tt, tc = make_queries(1, 64, 16)
    outs = {}
    with torch.no_grad():
        for backend in ("eager", "sdpa"):
            model.set_attention(backend)
            outs[backend] = model(video, uv, ts, tt, tc, aspect_ratio=1.33)
    model.set_attention("sdpa")
    for name in OUTPUT_SHAPES:
        rel = ((outs["eager"][name] - outs["sdpa"][name]).norm() / outs["eager"][name].norm()).item()
        assert rel < 1e-5, (name, rel)


def test_queries_are_independent(model):
    """Cross-attention only: a query's answer depends neither on the other queries of its batch nor on their order,
    so N queries in one batch equal the same queries shuffled and split into several batches."""
    video = clip(model.config, frames=4)
    uv, ts, tt, tc = make_queries(1, 50, 4)
    perm = torch.randperm(50)
    with torch.no_grad():
        memory = model.encode(video)
        whole = model.decode(memory, video, uv, ts, tt, tc)
        parts = [
            model.decode(memory, video, uv[:, idx], ts[:, idx], tt[:, idx], tc[:, idx]) for idx in perm.split([1, 17, 32])
        ]
    for name in OUTPUT_SHAPES:
        shuffled = torch.cat([p[name] for p in parts], dim=1)
        torch.testing.assert_close(shuffled, whole[name][:, perm], rtol=1e-5, atol=1e-6)


def test_local_blocks_stay_within_their_slice(tiny_config):
    """With only block 0 (local), changing frames of slice 0 leaves slice 1's tokens and the aspect token alone;
    with a global block after it, they change."""
    for depth, should_leak in ((1, False), (2, True)):
        m = D4RT(tiny_config.replace(enc_depth=depth)).eval()
        video = clip(m.config, frames=4)
        edited = video.clone()
        edited[:, :2] = torch.rand_like(edited[:, :2])  # slice 0 = frames 0, 1
        with torch.no_grad():
            a, b = m.encode(video, 1.7), m.encode(edited, 1.7)
        P = m.config.tokens_per_slice
        changed = (a[:, P:] - b[:, P:]).abs().max().item()
        assert (a[:, :P] - b[:, :P]).abs().max() > 1e-3
        assert (changed > 1e-4) == should_leak, changed


def test_aspect_ratio_token_joins_global_blocks_only(tiny_config):
    m = D4RT(tiny_config.replace(enc_depth=1)).eval()  # local only: the aspect token reaches no video token
    video = clip(m.config, frames=2)
    with torch.no_grad():
        a, b = m.encode(video, 0.5), m.encode(video, 2.0)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-4
    m2 = D4RT(tiny_config.replace(enc_depth=2)).eval()
    with torch.no_grad():
        assert (m2.encode(video, 0.5)[:, :-1] - m2.encode(video, 2.0)[:, :-1]).abs().max() > 1e-4


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("window", [None, 7, 12])
def test_attention_against_float64(backend, window):
    B, H, N, D = 2, 3, 84, 16
    q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
    out = attend(q, k, v, backend, window)
    q64, k64, v64 = q.double(), k.double(), v.double()
    s = q64 @ k64.transpose(-1, -2) / math.sqrt(D)
    if window:
        idx = torch.arange(N) // window
        s = s.masked_fill(idx[:, None] != idx[None, :], float("-inf"))
    ref = torch.softmax(s, -1) @ v64
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-6


def test_sinusoidal_formula():
    n, d = 300, 24
    table = sinusoidal_position_embedding(n, d).double()
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)
    angle = pos / 10000.0 ** (2 * i / d)
    torch.testing.assert_close(table[:, 0::2], torch.sin(angle), atol=1e-4, rtol=0)
    torch.testing.assert_close(table[:, 1::2], torch.cos(angle), atol=1e-4, rtol=0)


def test_fourier_feature_order():
    uv = torch.rand(2, 5, 2, dtype=torch.float64)
    f = fourier_features(uv, 8)
    assert f.shape == (2, 5, 34)
    for c in range(2):
        x = uv[..., c]
        block = f[..., 17 * c : 17 * (c + 1)]
        torch.testing.assert_close(block[..., 0], x)
        for k in range(8):
            torch.testing.assert_close(block[..., 1 + k], torch.sin(x * 2**k * math.pi))
            torch.testing.assert_close(block[..., 9 + k], torch.cos(x * 2**k * math.pi))


def test_rgb_patches_match_grid_sample():
    """Against F.grid_sample(align_corners=True, padding_mode="border"), one query at a time, in float64;
    queries near the borders included."""
    B, T, S, N, size = 2, 3, 20, 30, 9
    video = torch.rand(B, T, 3, S, S, dtype=torch.float64)
    uv = torch.rand(B, N, 2, dtype=torch.float64)
    uv[:, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.99, 0.02]], dtype=torch.float64)
    t_src = torch.randint(0, T, (B, N))
    got = sample_rgb_patches(video, uv, t_src, size)
    offsets = torch.arange(-4, 5, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            cx, cy = uv[b, n, 0] * (S - 1), uv[b, n, 1] * (S - 1)
            gy, gx = torch.meshgrid(cy + offsets, cx + offsets, indexing="ij")
            grid = torch.stack([gx, gy], -1) / (S - 1) * 2 - 1
            frame = video[b, t_src[b, n]][None]
            ref = F.grid_sample(frame, grid[None], mode="bilinear", padding_mode="border", align_corners=True)
            torch.testing.assert_close(got[b, n], ref.reshape(-1), rtol=0, atol=1e-12)


def test_bfloat16_model_runs(tiny_config):
    m = D4RT(tiny_config.replace()).eval().to(torch.bfloat16)
    video = clip(m.config, frames=2)
    uv, ts, tt, tc = make_queries(1, 8, 2)
    with torch.no_grad():
        out = m(video, uv, ts, tt, tc)
    assert out["xyz"].dtype == torch.bfloat16 and torch.isfinite(out["xyz"].float()).all()
