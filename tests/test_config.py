import json

import pytest
import torch

from d4rt import D4RT, D4RTConfig


def count_on_meta(cfg: D4RTConfig) -> int:
    with torch.device("meta"):
        return D4RT(cfg).num_parameters()


def test_g_preset_is_opend4rt_exactly():
    # 1,162,494,733 parameters at 48 frames (OpenD4RT_48CLIP manifest); built on meta, nothing allocated
    assert count_on_meta(D4RTConfig.preset("g")) == 1_162_494_733
    # 32 frames: the time tables shrink by 3 x 16 x 1280
    assert count_on_meta(D4RTConfig.preset("g", num_frames=32)) == 1_162_433_293


def test_base_and_tiny_sizes():
    tiny, base = D4RTConfig.preset("tiny"), D4RTConfig.preset("base")
    assert count_on_meta(tiny) <= 10_000_000
    assert (base.enc_dim, base.enc_depth, base.enc_heads) == (768, 12, 12)
    assert (base.dec_dim, base.dec_depth, base.dec_heads, base.rgb_patch) == (512, 6, 8, 9)
    assert tiny.enc_head_dim == base.enc_head_dim == 64


def test_config_round_trip(tmp_path):
    cfg = D4RTConfig.preset("base", num_frames=32)
    cfg.save(tmp_path / "config.json")
    assert D4RTConfig.load(tmp_path / "config.json") == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(enc_heads=5), "enc_dim=192 is not divisible"),
        (dict(image_size=100), "not a multiple of the tubelet"),
        (dict(rgb_patch=8), "must be odd"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        D4RTConfig.preset("tiny", **overrides)


def test_unknown_preset_and_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        D4RTConfig.preset("huge")
    (tmp_path / "config.json").write_text(json.dumps({"enc_dim": 64, "colour": "red"}))
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        D4RTConfig.load(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="no config"):
        D4RTConfig.load(tmp_path / "missing.json")
