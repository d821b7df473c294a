import json

import torch

from d4rt import D4RT, D4RTConfig
from d4rt.cli import main as cli_main
from d4rt.memory_plan import GiB, clip_bytes, graph_parameters, plan
from tests.conftest import make_queries


def test_graph_split_and_keys_values_match_the_model(tiny_config):
    """The plan's per-graph parameters are the ones autograd reaches from each graph's outputs, and its keys/values
    bytes are the size of model.memory_kv's tensors."""
    config = tiny_config.replace(image_size=64, enc_depth=2, dec_depth=2)
    model = D4RT(config)
    frames = 4
    video = torch.rand(1, frames, 3, config.image_size, config.image_size)
    keys, values = model.memory_kv(model.encode(video, 1.3))
    assert clip_bytes(config, frames, 2)["keys + values"] == (keys.numel() + values.numel()) * 2

    def reached(loss: torch.Tensor) -> int:
        """Parameters with a gradient from loss; the decoder's packed q|k|v projections count the rows that get one."""
        model.zero_grad(set_to_none=True)
        loss.backward()
        count = 0
        for name, p in model.named_parameters():
            if p.grad is None or not p.grad.abs().sum():
                continue
            rows = p.grad.reshape(p.shape[0], -1).abs().sum(1) > 0 if "cross_attn.in_proj" in name else None
            count += p.numel() if rows is None else int(rows.sum()) * (p.numel() // p.shape[0])
        return count

    encoder_graph = reached((keys * torch.randn_like(keys)).sum() + (values * torch.randn_like(values)).sum())
    uv, ts, tt, tc = make_queries(1, 64, frames)
    ts[0, :frames], tt[0, :frames], tc[0, :frames] = (torch.arange(frames),) * 3  # every time-table row in use
    out = model.decode_kv(keys.detach(), values.detach(), video, uv, ts, tt, tc)
    decoder_graph = reached(sum((o * torch.randn_like(o)).sum() for o in out.values()))
    assert graph_parameters(config) == {"encoder graph": encoder_graph, "decoder graph": decoder_graph}


def test_g_plan_numbers():
    g = D4RTConfig.preset("g")
    p = plan(g, 48)
    assert sum(p["parameters"].values()) == 1_162_494_733
    assert p["weights"]["encoder graph"] + p["weights"]["decoder graph"] == 2 * 1_162_494_733
    L, H, M, Dh = 8, 16, 24 * 256 + 1, 80
    assert p["clip"]["keys + values"] == L * 2 * H * M * Dh * 2
    fused, unfused = p["attention"]["fused"], p["attention"]["unfused"]
    assert unfused["encoder_activation_peak"] >= 2 * 16 * M * M * 2 > fused["encoder_activation_peak"]
    assert unfused["decoder_bytes_per_query"] > 2 * H * M * 2 > fused["decoder_bytes_per_query"]


def test_cli_writes_a_consistent_plan(tmp_path, tiny_config):
    assert cli_main(["memory-plan", "--preset", "g", "--frames", "32", "--json", str(tmp_path / "plan.json")]) == 0
    p = json.loads((tmp_path / "plan.json").read_text())
    assert p["frames"] == 32 and p["memory_tokens"] == 16 * 256 + 1
    for mode in ("fused", "unfused"):
        per_query = p["attention"][mode]["decoder_bytes_per_query"]
        for row in p["attention"][mode]["devices"]:
            usable = (row["memory_gib"] - row["reserved_gib"]) * GiB
            largest = row["largest_query_batch"]
            assert row["fixed_bytes"] + largest * per_query <= usable < row["fixed_bytes"] + (largest + 1) * per_query
            for n, fits in row["fits"].items():
                assert fits == (int(n) <= largest)
