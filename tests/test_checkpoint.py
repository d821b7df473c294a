import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import d4rt.checkpoint as ckpt
from d4rt import D4RT
from tests.conftest import make_queries


def outputs(model, video, queries):
    with torch.no_grad():
        return model(video, *queries)


@pytest.fixture
def saved(tmp_path, tiny_config):
    model = D4RT(tiny_config, attention="eager").eval()
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


def test_round_trip(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = D4RT.from_pretrained(path, attention="eager")
    assert loaded.config == model.config
    video = torch.rand(1, 4, 3, 128, 128)
    q = make_queries(1, 20, 4)
    for (name, p), (name2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name2 and p.dtype == p2.dtype and torch.equal(p, p2), name  # the parameters: bit-exact
    # The outputs: within float32 tolerance, not bit-exact. Loaded tensors may sit at other alignments, so the
    # same arithmetic can take another SIMD path (seen: 9e-8 apart); ~1e-6 relative is a few float32 ulps
    # accumulated over the tiny model's layers.
    a, b = outputs(model, video, q), outputs(loaded, video, q)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    assert D4RT.from_pretrained(path).attention == "sdpa"  # the default; the backend is not in config.json
    assert "attention" not in json.loads((path / "config.json").read_text())


def test_config_json_with_the_retired_attention_field_still_loads(saved):
    """config.json files written before the attention backend became a run-time argument carry "attention": it is
    ignored, with no error, and the model gets the backend it is asked for."""
    model, path = saved
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "attention": "triton"}))
    loaded = D4RT.from_pretrained(path, attention="eager")
    assert loaded.config == model.config and loaded.attention == "eager"
    assert all(m.backend == "eager" for m in loaded.modules() if hasattr(m, "backend"))


def test_from_pretrained_is_float32_unless_asked(tmp_path, tiny_config):
    model = D4RT(tiny_config).eval().half()
    model.save_pretrained(tmp_path)
    assert {p.dtype for p in D4RT.from_pretrained(tmp_path).parameters()} == {torch.float32}
    assert {p.dtype for p in D4RT.from_pretrained(tmp_path, dtype=torch.float16).parameters()} == {torch.float16}
    assert {p.dtype for p in ckpt.load_pretrained(tmp_path, dtype=None).parameters()} == {torch.float16}


def test_sharded_round_trip(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(ckpt, "MAX_SHARD_BYTES", 2_000_000)
    model = D4RT(tiny_config).eval()
    model.save_pretrained(tmp_path)
    index = json.loads((tmp_path / ckpt.INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / ckpt.WEIGHTS_NAME).exists()
    loaded = D4RT.from_pretrained(tmp_path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_mismatched_checkpoint_lists_what_is_wrong(saved):
    _, path = saved
    state = load_file(str(path / "model.safetensors"))
    del state["decoder.out_norm.weight"]
    state["decoder.extra.weight"] = torch.zeros(3)
    state["heads.xyz_head.weight"] = torch.zeros(4, 192)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        D4RT.from_pretrained(path)
    msg = str(e.value)
    assert "missing (1):\n    decoder.out_norm.weight" in msg
    assert "unexpected (1):\n    decoder.extra.weight" in msg
    assert "heads.xyz_head.weight: (4, 192) in the file, (3, 192) in the model" in msg


def test_config_mismatch(saved):
    _, path = saved
    with pytest.raises(ValueError, match="query_embedder.t_src_embed.weight: \\(16, 192\\) in the file, \\(32, 192\\)"):
        D4RT.from_pretrained(path, num_frames=32)


def test_corrupt_and_missing_files(saved, tmp_path):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        D4RT.from_pretrained(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        D4RT.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D4RT.from_pretrained(tmp_path / "nowhere")


def test_random_model_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = ckpt.random_model("tiny", seed=7, image_size=64)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    b, c = ckpt.random_model("tiny", seed=7, image_size=64), ckpt.random_model("tiny", seed=8, image_size=64)
    assert a.config.image_size == 64 and not a.training
    for (name, p), q, r in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, r) for p, r in zip(a.state_dict().values(), c.state_dict().values()))
