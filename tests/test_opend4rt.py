"""OpenD4RT checkpoints: conversion, refusals, and that our modules compute what the facts file says.

The two manifests in tests/data/opend4rt list every tensor of the released checkpoints; scaled-down checkpoints
are built from the 48-frame manifest's key list with smaller sizes, so they have exactly OpenD4RT's structure.
The reference forward pass (tests/opend4rt_reference.py) is written from the facts file, independently of
d4rt.models, in float64.
"""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import d4rt.checkpoint as ckpt_module
from d4rt import D4RT, D4RTConfig
from d4rt.checkpoint import build_empty, check_state_dict
from d4rt.cli import main as cli_main
from d4rt.models.attention import MultiheadAttention
from d4rt.models.decoder import DecoderBlock
from d4rt.models.encoder import EncoderBlock
from d4rt.opend4rt import config_from_shapes, convert_opend4rt, load_opend4rt
from tests import opend4rt_reference as ref
from tests.conftest import make_queries

DATA = Path(__file__).parent / "data" / "opend4rt"
MANIFESTS = {32: "OpenD4RT_32CLIP_9Dataset_NoAUG.manifest.json", 48: "OpenD4RT_48CLIP_9Mix_NoCropAUG.manifest.json"}

# The scaled-down architecture: every size differs from g's and from each other, so a wrong derivation shows.
SMALL = dict(E=96, D=80, E_MLP=160, D_MLP=112, ENC_DEPTH=4, DEC_DEPTH=3, FRAMES=6, TUBELET=(2, 8, 8), IMAGE=32)
SMALL_HEADS = dict(enc_heads=6, dec_heads=5)  # head dims 16 and 16


def manifest(frames: int) -> dict:
    return json.loads((DATA / MANIFESTS[frames]).read_text())


def scaled_shapes(small=SMALL) -> dict[str, tuple[int, ...]]:
    """The 48-frame manifest's names with g's sizes replaced by ``small``'s (blocks beyond the depth dropped)."""
    resize = {1408: small["E"], 4224: 3 * small["E"], 6144: small["E_MLP"], 1280: small["D"], 3840: 3 * small["D"],
              4480: small["D_MLP"], 48: small["FRAMES"]}  # fmt: skip
    shapes = {}
    for name, entry in manifest(48)["state_dict"].items():
        parts = name.split(".")
        if parts[1] == "blocks" and int(parts[2]) >= small[f"{parts[0][:3].upper()}_DEPTH"]:
            continue
        shape = [resize.get(d, d) for d in entry["shape"]]
        if name == "encoder.patch_embed.weight":
            shape[2:] = small["TUBELET"]
        shapes[name] = tuple(shape)
    return shapes


def random_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Weights ~ N(0, 1 / fan_in), LayerNorm scales 1 + N(0, 0.2^2), biases N(0, 0.2^2): never zeros or ones."""
    if len(shape) >= 2:
        return torch.randn(shape) / math.sqrt(math.prod(shape[1:])) * (4.0 if "query_embedder.t_" in name else 1.0)
    return (1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.2 * torch.randn(shape)


def scaled_state_dict(small=SMALL) -> dict[str, torch.Tensor]:
    return {name: random_tensor(name, shape) for name, shape in scaled_shapes(small).items()}


def scaled_yaml(small=SMALL, heads=SMALL_HEADS) -> dict:
    """The release's model.yaml (from the manifest) with the scaled sizes."""
    cfg = copy.deepcopy(manifest(48)["config"])
    m = cfg["model"]
    m["input"].update(clip_frames=small["FRAMES"], image_size=[small["IMAGE"]] * 2)
    m["encoder"].update(hidden_dim=small["E"], num_layers=small["ENC_DEPTH"], num_heads=heads["enc_heads"],
                        patch_size_t_h_w=list(small["TUBELET"]))  # fmt: skip
    m["decoder"].update(hidden_dim=small["D"], num_layers=small["DEC_DEPTH"], num_heads=heads["dec_heads"])
    return cfg


def randomize_(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(random_tensor(name, tuple(p.shape)))
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def clip_inputs(batch: int, frames: int, image: int, n: int):
    video = torch.rand(batch, frames, 3, image, image)
    uv, ts, tt, tc = make_queries(batch, n, frames)
    uv[:, :2] = torch.tensor([[0.0, 1.0], [1.0, 0.03]])  # border patches
    return video, 0.5 + 1.5 * torch.rand(batch), uv, ts, tt, tc


# ----- the math: our modules against the reference written from the facts file --------------------------------------
FLOAT64_TOL = {"sdpa": 1e-12, "eager": 1e-12}


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("local", [False, True])
def test_encoder_block_is_torch_multihead_attention_block(backend, local):
    """Pre-norm block, packed q/k/v in_proj, scale 1/sqrt(head dim), erf GELU, LN eps 1e-5; a local block is the
    same block applied to each temporal slice reshaped to [B * T', P, C]."""
    C, H, P, slices = 48, 3, 16, 3
    block = randomize_(EncoderBlock(C, H, 80, 1e-5, backend, 0.0)).double().eval()
    sd = {f"blk.{k}": v for k, v in block.state_dict().items()}
    x = torch.randn(2, slices * P, C, dtype=torch.float64)
    with torch.no_grad():
        if local:
            got = block(x, window=P)
            want = ref.encoder_block(x.reshape(2 * slices, P, C), sd, "blk", H).reshape(x.shape)
        else:
            got, want = block(x), ref.encoder_block(x, sd, "blk", H)
    assert rel_err(got, want) < FLOAT64_TOL[backend]
    if not local:  # the comparison can tell the exact GELU from the tanh approximation
        tanh = ref.encoder_block(x, sd, "blk", H, details={"gelu": "tanh"})
        assert rel_err(got, tanh) > 100 * FLOAT64_TOL[backend]


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_decoder_block_is_torch_cross_attention_block(backend):
    """K/V from the per-block norm_kv(memory) once, then queries attend: equals MHA(LN_q(x), LN_kv(m), LN_kv(m))."""
    C, H = 40, 5
    block = randomize_(DecoderBlock(C, H, 56, 1e-5, backend, 0.0)).double().eval()
    sd = {f"blk.{k}": v for k, v in block.state_dict().items()}
    x, memory = torch.randn(2, 23, C, dtype=torch.float64), torch.randn(2, 37, C, dtype=torch.float64)
    with torch.no_grad():
        got = block(x, *block.memory_kv(memory))
    assert rel_err(got, ref.decoder_block(x, memory, sd, "blk", H)) < FLOAT64_TOL[backend]


def test_whole_model_matches_the_reference_and_the_reference_can_tell():
    """Patch embedding (Conv3d layout, (t', h', w') order), positions, aspect token, local/global parity, final norm,
    memory_proj, query embedding (Fourier order, time tables, RGB patch, out_norm), decoder, head order; then the
    same comparison with the heads or the local/global parity changed in the reference fails by far more than the
    tolerance (the heads are in no tensor shape, so this is what a wrong head count would look like)."""
    TOL = 1e-5  # the model computes uv features and RGB patches in float32 even in a float64 model
    cfg = config_from_shapes(scaled_shapes(), scaled_yaml())
    model = randomize_(D4RT(cfg, attention="eager")).double().eval()
    sd = model.state_dict()
    inputs = clip_inputs(2, 4, cfg.image_size, 33)
    with torch.no_grad():
        got = model(*[inputs[0].double()] + list(inputs[2:]), aspect_ratio=inputs[1].double())
    heads = (cfg.enc_heads, cfg.dec_heads)
    want = ref.forward(sd, *inputs, *heads)
    for name in ref.HEADS:
        assert got[name].shape == want[name].shape
        assert rel_err(got[name], want[name]) < TOL, name
    wrong_details = {
        "encoder heads x2": dict(enc_heads=2 * cfg.enc_heads),
        "decoder heads x1/5": dict(dec_heads=cfg.dec_heads // 5),
        "odd blocks local": dict(details={"local_parity": 1}),
    }
    for what, change in wrong_details.items():
        args = {"enc_heads": heads[0], "dec_heads": heads[1], **change}
        other = ref.forward(sd, *inputs, **args)
        assert rel_err(got["xyz"], other["xyz"]) > 100 * TOL, what


def test_g_preset_modules_follow_the_facts():
    """On the meta device: LN eps 1e-5 everywhere, exact GELU everywhere, 16 x 88 / 16 x 80 heads, even blocks local."""
    model = build_empty(D4RTConfig.preset("g"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    gelus = [m for m in model.modules() if isinstance(m, torch.nn.GELU)]
    assert len(norms) == 40 * 2 + 1 + 1 + 8 * 3 + 1 and {m.eps for m in norms} == {1e-5}
    assert len(gelus) == 40 + 1 + 1 + 8 and {m.approximate for m in gelus} == {"none"}
    attention = [m for m in model.modules() if isinstance(m, MultiheadAttention)]  # encoder blocks, then decoder
    assert [(m.heads, m.head_dim) for m in attention] == [(16, 88)] * 40 + [(16, 80)] * 8
    assert [model.encoder.is_local(i) for i in range(4)] == [True, False, True, False]


# ----- the manifests: every name and shape of both releases maps onto g --------------------------------------------
@pytest.mark.parametrize("frames", [32, 48])
@pytest.mark.parametrize("with_yaml", [False, True])
def test_release_manifest_maps_onto_g_preset(frames, with_yaml):
    m = manifest(frames)
    shapes = {k: tuple(v["shape"]) for k, v in m["state_dict"].items()}
    assert len(shapes) == 627
    config = config_from_shapes(shapes, m["config"] if with_yaml else None)
    assert config.replace(extra={}) == D4RTConfig.preset("g", num_frames=frames)
    assert config.extra["opend4rt"]["enc_heads_from"] == ("model.yaml" if with_yaml else "g preset")
    model = build_empty(config)
    check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes, MANIFESTS[frames])
    assert model.num_parameters() == m["num_params"] == sum(math.prod(s) for s in shapes.values())


# ----- conversion of a scaled-down checkpoint with OpenD4RT's key structure -----------------------------------------
def wrap(state: dict, how: str) -> dict:
    if how == "top level":
        return state
    if how == "lightning-style, module. prefix":
        inner = {f"module.{k}": v for k, v in state.items()}
        return {"epoch": 7, "global_step": 1234, "state_dict": inner, "optimizer_states": [{"lr": 1e-4}]}
    return {"net": state, "meta": {"note": "plain containers are fine"}}


@pytest.mark.parametrize("how", ["top level", "lightning-style, module. prefix", "under net"])
def test_scaled_checkpoint_converts_loads_runs_and_matches(tmp_path, how, monkeypatch):
    state = scaled_state_dict()
    (tmp_path / "release").mkdir()
    path = tmp_path / "release" / "opend4rt.ckpt"
    torch.save(wrap(state, how), path)
    options = []
    if how == "top level":  # heads and input size from the release's model.yaml beside the checkpoint
        (path.parent / "model.yaml").write_text(yaml.safe_dump(scaled_yaml()))
    else:  # or given on the command line
        options = ["--enc-heads", "6", "--dec-heads", "5", "--image-size", "32"]
    monkeypatch.setattr(ckpt_module, "MAX_SHARD_BYTES", 200_000)  # show the sharded form on a small model
    assert cli_main(["convert-opend4rt", str(path), str(tmp_path / "out"), *options]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "config.json" in written and "model.safetensors.index.json" in written and len(written) > 4

    model = D4RT.from_pretrained(tmp_path / "out", attention="eager")
    cfg = model.config
    assert (cfg.enc_dim, cfg.enc_depth, cfg.enc_heads, cfg.enc_mlp_dim) == (96, 4, 6, 160)
    assert (cfg.dec_dim, cfg.dec_depth, cfg.dec_heads, cfg.dec_mlp_dim) == (80, 3, 5, 112)
    assert (cfg.num_frames, cfg.tubelet, cfg.image_size, cfg.fourier_bands, cfg.rgb_patch) == (6, (2, 8, 8), 32, 8, 9)
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k

    inputs = clip_inputs(1, 4, 32, 50)
    with torch.no_grad():
        got = model(inputs[0], *inputs[2:], aspect_ratio=inputs[1])
    want = ref.forward(state, *inputs, enc_heads=6, dec_heads=5)
    for name in ref.HEADS:
        assert rel_err(got[name], want[name]) < 1e-4, name  # float32 model against the float64 reference


def test_from_opend4rt_on_the_release_folder_and_weights_are_mapped_not_copied(tmp_path, monkeypatch):
    """D4RT.from_opend4rt accepts the folder; the file is memory-mapped and the parameters are its tensors."""
    state = scaled_state_dict()
    torch.save(state, tmp_path / "opend4rt.ckpt")
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(scaled_yaml()))
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen["kwargs"], seen["result"] = kwargs, real_load(*args, **kwargs)
        return seen["result"]

    monkeypatch.setattr(torch, "load", spy)
    model = D4RT.from_opend4rt(tmp_path, attention="sdpa")
    assert seen["kwargs"] == dict(map_location="cpu", weights_only=True, mmap=True)
    assert model.attention == "sdpa" and not model.training
    for name, p in model.named_parameters():
        assert p.data_ptr() == seen["result"][name].data_ptr(), name


def test_heads_rule_without_model_yaml():
    shapes = scaled_shapes(dict(SMALL, E=128, D=192))
    with pytest.warns(UserWarning, match="assuming heads of 64 channels"):
        cfg = config_from_shapes(shapes)
    assert (cfg.enc_heads, cfg.dec_heads) == (2, 3) and cfg.extra["opend4rt"]["enc_heads_from"] == "head_dim 64 rule"
    cfg = config_from_shapes(shapes, enc_heads=8, dec_heads=4)
    assert (cfg.enc_heads, cfg.dec_heads, cfg.extra["opend4rt"]["dec_heads_from"]) == (8, 4, "argument")
    with pytest.raises(ValueError, match="cannot tell the encoder's attention heads.*--enc-heads"):
        config_from_shapes(scaled_shapes())  # 96 is neither g's width nor a multiple of 64


# ----- refusals -------------------------------------------------------------------------------------------------------
def damaged(kind: str) -> tuple[dict, str]:
    state = scaled_state_dict()
    if kind == "missing":
        del state["decoder.blocks.1.ff.3.bias"]
        return state, "missing (1):\n    decoder.blocks.1.ff.3.bias"
    if kind == "extra":
        state["encoder.blocks.0.attn.bias_k"] = torch.randn(1, 1, 96)
        return state, "unexpected (1):\n    encoder.blocks.0.attn.bias_k"
    state["encoder.blocks.2.ff.0.weight"] = torch.randn(150, 96)
    state["query_embedder.t_cam_embed.weight"] = torch.randn(5, 80)
    return state, (
        "mis-shaped (2):\n    encoder.blocks.2.ff.0.weight: (150, 96) in the file, (160, 96) in the model\n"
        "    query_embedder.t_cam_embed.weight: (5, 80) in the file, (6, 80) in the model"
    )


@pytest.mark.parametrize("kind", ["missing", "extra", "mis-shaped"])
def test_mismatched_tensors_are_listed(tmp_path, kind):
    state, listing = damaged(kind)
    torch.save({"state_dict": state}, tmp_path / "opend4rt.ckpt")
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(scaled_yaml()))
    with pytest.raises(ValueError) as e:
        convert_opend4rt(tmp_path / "opend4rt.ckpt", tmp_path / "out")
    assert "does not match the model" in str(e.value) and listing in str(e.value)
    assert not (tmp_path / "out").exists()


class Payload:
    """Something a weights-only load must not construct."""

    def __init__(self):
        self.x = 1


def test_checkpoint_needing_arbitrary_unpickling_is_refused(tmp_path):
    torch.save({"state_dict": scaled_state_dict(), "hyper_parameters": Payload()}, tmp_path / "opend4rt.ckpt")
    with pytest.raises(ValueError, match=r"needs arbitrary unpickling \(Unsupported global: .*Payload\)"):
        load_opend4rt(tmp_path / "opend4rt.ckpt", **SMALL_HEADS, image_size=32)


def test_unreadable_files_and_missing_state_dicts(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save(scaled_state_dict(), good)
    data = good.read_bytes()
    for name, content in (("truncated", data[: len(data) * 2 // 3]), ("junk", b"not a checkpoint" * 9), ("empty", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"{name} is not a readable torch checkpoint .* truncated or corrupt"):
            load_opend4rt(tmp_path / name, **SMALL_HEADS)
    with pytest.raises(FileNotFoundError, match="no OpenD4RT checkpoint at .*nowhere.ckpt"):
        load_opend4rt(tmp_path / "nowhere.ckpt")
    torch.save(torch.randn(3), tmp_path / "tensor.ckpt")
    with pytest.raises(ValueError, match="holds a Tensor, expected a dict of tensors"):
        load_opend4rt(tmp_path / "tensor.ckpt")
    torch.save({"epoch": 3, "state": {"a": 1}}, tmp_path / "nostate.ckpt")
    with pytest.raises(ValueError, match=r"has no state dict: .* not tensors: \['epoch', 'state'\]"):
        load_opend4rt(tmp_path / "nostate.ckpt")


def test_legacy_pickle_format_loads_without_mmap(tmp_path):
    state = scaled_state_dict()
    torch.save(state, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    model = load_opend4rt(tmp_path / "old.ckpt", **SMALL_HEADS, image_size=32)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_model_yaml_of_another_checkpoint_is_refused(tmp_path):
    torch.save(scaled_state_dict(), tmp_path / "opend4rt.ckpt")
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(manifest(32)["config"]))  # the g release's yaml
    with pytest.raises(ValueError, match=r"model.yaml does not describe this checkpoint \(enc_dim: 1408 in model"):
        load_opend4rt(tmp_path / "opend4rt.ckpt")
    with pytest.raises(FileNotFoundError, match="no model.yaml at"):
        load_opend4rt(tmp_path / "opend4rt.ckpt", model_yaml=tmp_path / "other.yaml")


def test_safetensors_written_by_conversion_hold_the_file_dtype(tmp_path):
    state = {k: v.to(torch.bfloat16) for k, v in scaled_state_dict().items()}
    torch.save(state, tmp_path / "opend4rt.ckpt")
    convert_opend4rt(tmp_path / "opend4rt.ckpt", tmp_path / "out", **SMALL_HEADS, image_size=32)
    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}
    assert all(torch.equal(stored[k], v) for k, v in state.items())
