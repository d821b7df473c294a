"""The training-only auxiliary losses: per-token depth targets, the own-token index and the own-token attention
loss, each against an independent computation; neither changes the model's outputs or saved weights."""

import numpy as np
import pytest
import torch

from d4rt import D4RT, D4RTConfig
from d4rt.data.dataset import sample_queries
from d4rt.evaluation.diagnostics import _token_centre_queries
from d4rt.training.auxiliary import (
    TokenDepthHead,
    own_token_attention_loss,
    own_token_index,
    token_depth_loss,
    tubelet_log_depth,
)
from d4rt.training.fit import D4RTLightningModule


def small_config():
    return D4RTConfig.preset("tiny", image_size=32, num_frames=4)


def test_tubelet_log_depth_against_a_loop():
    tubelet = (2, 16, 16)
    depth = torch.rand(2, 4, 32, 32, dtype=torch.float64) * 9 + 0.5
    out = tubelet_log_depth(depth, tubelet).double()
    for b in range(2):
        log_d = np.log(depth[b].numpy())
        log_d -= log_d.mean()
        n = 0
        for t in range(2):
            for r in range(2):
                for c in range(2):
                    block = log_d[2 * t:2 * t + 2, 16 * r:16 * r + 16, 16 * c:16 * c + 16].ravel()
                    np.testing.assert_allclose(out[b, n].numpy(), block, rtol=0, atol=1e-5)
                    n += 1
    with pytest.raises(ValueError, match="do not tile"):
        tubelet_log_depth(torch.rand(1, 3, 32, 32) + 1, tubelet)


def test_token_depth_loss_is_shift_invariant_and_positive_otherwise():
    depth = torch.rand(2, 4, 32, 32) * 5 + 1
    target = tubelet_log_depth(depth, (2, 16, 16))
    shift = torch.randn(2, 1, 1)
    assert float(token_depth_loss(target + shift, depth, (2, 16, 16))) < 1e-6
    noisy = target + 0.1 * torch.randn_like(target)
    assert float(token_depth_loss(noisy, depth, (2, 16, 16))) > 0.05
    with pytest.raises(ValueError, match="does not match"):
        token_depth_loss(target[:, :-1], depth, (2, 16, 16))


def test_own_token_index_matches_the_diagnostics_token_centres():
    cfg = D4RTConfig.preset("tiny", image_size=64, num_frames=4)
    uv, t, own = _token_centre_queries(cfg, 4)
    assert torch.equal(own_token_index(uv, t, 64, cfg.tubelet)[0], own)
    # and at random sub-pixel positions: the pixel nearest (u (S-1), v (S-1)), counted by hand
    rng = np.random.default_rng(np.random.randint(2**31))
    uv = rng.uniform(0, 1, (1, 200, 2))
    t = rng.integers(0, 4, (1, 200))
    got = own_token_index(torch.tensor(uv), torch.tensor(t), 64, (2, 16, 16))[0].numpy()
    x, y = np.rint(uv[0, :, 0] * 63).astype(int), np.rint(uv[0, :, 1] * 63).astype(int)
    np.testing.assert_array_equal(got, (t[0] // 2) * 16 + (y // 16) * 4 + x // 16)


def test_own_token_attention_loss_against_torch_multihead_attention():
    """-log of torch.nn.MultiheadAttention's own weights (same packed parameters) on the own token."""
    torch.manual_seed(int(np.random.randint(2**31)))
    model = D4RT(small_config()).eval()
    B, N, T, S = 2, 50, 4, 32
    video = torch.rand(B, T, 3, S, S)
    uv = torch.rand(B, N, 2)
    ts = torch.randint(0, T, (B, N))
    with torch.no_grad():
        memory = model.encode(video, 1.0)
        keys, _ = model.memory_kv(memory)
        x = model.query_embedder(video, uv, ts, ts, ts)
        own = own_token_index(uv, ts, S, model.config.tubelet)
        block = model.decoder.blocks[0]
        ref = torch.nn.MultiheadAttention(model.config.dec_dim, model.config.dec_heads, batch_first=True)
        ref.in_proj_weight.copy_(block.cross_attn.in_proj_weight)
        ref.in_proj_bias.copy_(block.cross_attn.in_proj_bias)
        kv = block.norm_kv(memory)
        _, weights = ref(block.norm_q(x), kv, kv, need_weights=True, average_attn_weights=False)  # [B, H, N, M]
        for head in range(model.config.dec_heads):
            expected = -torch.log(weights[:, head].gather(-1, own[..., None])).mean()
            got = own_token_attention_loss(model, x, keys, own, head=head)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_auxiliary_losses_leave_the_model_alone():
    """With the auxiliary losses on, the module's outputs equal the bare model's, the head is not in the model's
    state dict, and one step moves the head (it gets gradients)."""
    config = small_config()
    module = D4RTLightningModule(config.to_dict(), token_depth_weight=1.0, own_token_weight=0.1)
    assert not any(k.startswith("token_depth_head") for k in module.model.state_dict())
    B, N, T, S = 1, 32, 4, 32
    rng = np.random.default_rng(np.random.randint(2**31))
    uv, t_src, t_tgt, t_cam, _ = sample_queries(rng, np.ones((T, S, S), bool), N)
    batch = {"video": torch.rand(B, T, 3, S, S), "coords_uv": torch.tensor(uv, dtype=torch.float32)[None],
             "t_src": torch.tensor(t_src)[None], "t_tgt": torch.tensor(t_tgt)[None], "t_cam": torch.tensor(t_cam)[None],
             "aspect_ratio": torch.ones(B), "depth_maps": torch.rand(B, T, S, S) * 4 + 1}
    pred, aux = module.forward_with_auxiliary(batch)
    with torch.no_grad():
        bare = module(batch)
    for k in bare:
        torch.testing.assert_close(pred[k], bare[k], rtol=1e-5, atol=1e-6)
    assert set(aux) == {"token_depth", "own_token"}
    (aux["token_depth"] + aux["own_token"]).backward()
    assert module.token_depth_head.proj.weight.grad.abs().sum() > 0
    assert module.model.decoder.blocks[0].cross_attn.in_proj_weight.grad.abs().sum() > 0


def test_token_depth_head_shapes():
    head = TokenDepthHead(8, (2, 4, 4))
    assert head(torch.randn(3, 11, 8)).shape == (3, 10, 32)


def test_depth_fraction_makes_pure_depth_queries():
    rng = np.random.default_rng(np.random.randint(2**31))
    edges = rng.random((8, 16, 16)) < 0.2
    uv, t_src, t_tgt, t_cam, _ = sample_queries(rng, edges, 1000, depth_fraction=0.5)
    pure = (t_src == t_tgt) & (t_tgt == t_cam)
    assert pure.mean() >= 0.5 and pure.mean() < 0.6  # 50 % by construction, ~1/64 of the rest by chance
