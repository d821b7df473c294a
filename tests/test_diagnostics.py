"""d4rt.evaluation.diagnostics and scripts/diagnose_training.py: baselines on known depth maps, attention rows, the probe."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from d4rt import D4RT, D4RTConfig
from d4rt.evaluation.diagnostics import decoder_attention, token_depth_probe, token_medians, video_blind_baselines

TUBELET = (2, 16, 16)


def token_constant_depth(rng, frames=4, size=32):
    """Depth maps constant on each 2 x 16 x 16 token, and the token values [T/2 * 2 * 2]."""
    tokens = rng.uniform(1.0, 10.0, (frames // 2, size // 16, size // 16))
    return np.repeat(np.repeat(np.repeat(tokens, 2, 0), 16, 1), 16, 2), tokens.ravel()


def test_token_medians_and_oracles_on_token_constant_depth():
    rng = np.random.default_rng(0)
    depth, tokens = token_constant_depth(rng)
    np.testing.assert_allclose(token_medians(depth, TUBELET), tokens)
    clips = [token_constant_depth(rng)[0] for _ in range(3)]
    b = video_blind_baselines(clips, TUBELET)
    assert b["token_median_oracle"] == pytest.approx(0.0, abs=1e-12)
    assert min(b["best_constant"], b["row_median_oracle"], b["layout_prior"]) > 0.0
    rows = np.broadcast_to(np.linspace(2.0, 9.0, 32)[None, :, None], (4, 32, 32))  # depth varies by row alone
    by_row = video_blind_baselines([rows, rows * 1.5], TUBELET)
    assert by_row["row_median_oracle"] == pytest.approx(0.0, abs=1e-12) and by_row["best_constant"] > 0.1
    same = video_blind_baselines([clips[0], 2.0 * clips[0]], TUBELET)  # the same layout at another scale
    assert same["layout_prior"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least two clips"):
        video_blind_baselines(clips[:1], TUBELET)


def test_decoder_attention_rows_and_probe():
    torch.manual_seed(0)
    model = D4RT(D4RTConfig.preset("tiny", image_size=32, num_frames=4))
    rows = decoder_attention(model, torch.rand(1, 4, 3, 32, 32))
    cfg = model.config
    assert [(r["block"], r["head"]) for r in rows] == [(b, h) for b in range(cfg.dec_depth) for h in range(cfg.dec_heads)]
    M = cfg.memory_tokens(4)
    for r in rows:
        assert r["uniform"] == pytest.approx(1 / M)
        assert 0.0 < r["own"] <= r["max"] <= 1.0
    rng = np.random.default_rng(1)
    depths = [token_constant_depth(rng)[0] for _ in range(4)]
    videos = [torch.rand(1, 4, 3, 32, 32) for _ in range(4)]
    score = token_depth_probe(model, videos, depths, train_clips=3)
    assert np.isfinite(score) and score >= 0.0  # an untrained model: no known value (the probe is checked below)
    with pytest.raises(ValueError, match="train_clips"):
        token_depth_probe(model, videos, depths, train_clips=4)


class TokenEncoder:
    """A stand-in encoder whose memory tokens are given: encode(video) returns the features stored for that video
    ([1, M + 1, D], the last row the aspect-ratio token the probe drops)."""

    config = D4RTConfig.preset("tiny", image_size=32, num_frames=4)

    def __init__(self, features):
        self.features = features

    def eval(self):
        return self

    def encode(self, video, aspect_ratio):
        return torch.from_numpy(self.features[id(video)])[None]


def test_token_depth_probe_reads_depth_encoded_in_the_tokens():
    """By hand: tokens whose first feature is log depth minus the clip's mean log depth (the probe's target) and
    whose other features are noise fit exactly (ridge ~0): the held-out prediction is depth / its geometric mean,
    which clip-median scaling maps back onto the depth: AbsRel 0 (measured <= 2e-11 over 300 draws). Tokens shown in
    the wrong order (a mix-up of the token layout) score far from 0: 32 tokens per clip with depths in [1, 10],
    300 draws: smallest 0.52, median 0.79; the bound 0.3 is under half the smallest."""
    assert TokenEncoder.config.tubelet == TUBELET
    rng = np.random.default_rng(np.random.randint(2**31))
    clips = [token_constant_depth(rng, 4, 64) for _ in range(6)]
    videos = [torch.rand(1, 4, 3, 32, 32) for _ in clips]

    def features(tokens, order):
        log = np.log(tokens)
        f = np.c_[log - log.mean(), rng.standard_normal((len(tokens), 3))][order]
        return np.r_[f, rng.standard_normal((1, 4))]  # + the aspect-ratio token

    exact = TokenEncoder({id(v): features(t, np.arange(len(t))) for v, (_, t) in zip(videos, clips)})
    depths = [d for d, _ in clips]
    assert token_depth_probe(exact, videos, depths, train_clips=4, ridge=1e-9) < 1e-6
    shuffled = {id(v): features(t, np.arange(len(t)) if i < 4 else rng.permutation(len(t)))
                for i, (v, (_, t)) in enumerate(zip(videos, clips))}
    assert token_depth_probe(TokenEncoder(shuffled), videos, depths, train_clips=4, ridge=1e-9) > 0.3


def test_diagnose_script(tmp_path):
    from d4rt.data.synthetic import generate_clips

    generate_clips(tmp_path / "clips", range(4), 16, 32, progress=False)
    out = tmp_path / "diag.json"
    proc = subprocess.run(
        [sys.executable, "scripts/diagnose_training.py", "--clips", str(tmp_path / "clips"), "--img_size", "32",
         "--json", str(out)], capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["baselines"]) == {"best_constant", "layout_prior", "row_median_oracle", "token_median_oracle"}
    assert len(report["decoder_attention"]) == 2 * 3 and "token-depth probe" in proc.stdout
