"""Own-token attention by initialisation: only the chosen head's query / key rows change, and afterwards that head
puts many times the uniform weight on each query's own token (measured by the diagnostics' independent code)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from d4rt import D4RT
from d4rt.data.synthetic import Room
from d4rt.evaluation.diagnostics import decoder_attention
from d4rt.training.attention_init import init_own_token_head, position_code

ROOT = Path(__file__).resolve().parents[1]


def test_position_code_dot_product_peaks_at_the_same_place():
    rng = np.random.default_rng(np.random.randint(2**31))
    u, v = rng.uniform(0, 1, 2)
    grid = torch.linspace(0, 1, 33)
    uu, vv = torch.meshgrid(grid, grid, indexing="ij")
    codes = position_code(uu.reshape(-1), vv.reshape(-1), torch.zeros(33 * 33, dtype=torch.long), 4, 4, 2.0)
    query = position_code(torch.tensor([u]), torch.tensor([v]), torch.zeros(1, dtype=torch.long), 4, 4, 2.0)[0]
    score = codes @ query
    # by hand: sum_k cos(2^k pi (u - u')) + cos(2^k pi (v - v')) + time_weight^2
    k = 2.0 ** np.arange(4) * math.pi
    expected = (np.cos(k * (u - uu.reshape(-1, 1).numpy())).sum(1) + np.cos(k * (v - vv.reshape(-1, 1).numpy())).sum(1)
                + 4.0)
    # float32 codes: 8 cosines + 4 summed, each within ~1e-7 -> 1e-5 absolute is a few float32 ulps of 12
    np.testing.assert_allclose(score.numpy(), expected, rtol=0, atol=1e-5)
    best = int(score.argmax())
    assert abs(uu.reshape(-1)[best] - u) <= 1 / 32 and abs(vv.reshape(-1)[best] - v) <= 1 / 32
    other_time = position_code(torch.tensor([u]), torch.tensor([v]), torch.ones(1, dtype=torch.long), 4, 4, 2.0)[0]
    assert float(other_time @ query) == pytest.approx(float(query @ query) - 4.0, abs=1e-5)  # loses time_weight^2


def rendered(seed):
    clip = Room.random(seed, num_frames=16).render_clip(128, 128)
    return torch.from_numpy(clip.rgb).permute(0, 3, 1, 2)[None].float() / 255.0


def test_init_raises_own_token_attention_and_touches_only_its_head():
    """On the bundled checkpoint and fresh synthetic clips (the memory of a trained encoder carries position)."""
    model = D4RT.from_pretrained(ROOT / "checkpoints" / "tiny-synthetic").float().eval()
    base = int(np.random.randint(10**6))
    videos = [rendered(base + i) for i in range(4)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit = init_own_token_head(model, videos, queries_per_clip=512)
    assert 0.5 < fit["query_r2"] <= 1.0 and 0.2 < fit["key_r2"] <= 1.0, fit
    attn = model.decoder.blocks[0].cross_attn
    C, Dh = attn.dim, attn.head_dim
    changed = torch.zeros(3 * C, dtype=torch.bool)
    changed[:Dh] = changed[C:C + Dh] = True
    for name, value in model.state_dict().items():
        if name.endswith("decoder.blocks.0.cross_attn.in_proj_weight") or name.endswith(
                "decoder.blocks.0.cross_attn.in_proj_bias"):
            assert torch.equal(value[~changed], before[name][~changed])
            assert not torch.equal(value[changed], before[name][changed])
        else:
            assert torch.equal(value, before[name]), name
    rows = [r for r in decoder_attention(model, rendered(base + 4)) if r["block"] == 0]
    assert rows[0]["own"] > 10 * rows[0]["uniform"], rows[0]  # 44x measured; the trained head had 2.2x
