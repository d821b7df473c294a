"""The model's "triton" attention backend against "eager": same weights, same outputs and gradients.

A reduced tiny model (one local and one global encoder block, two decoder blocks) on a 4-frame clip keeps this fast
in the interpreter; on a GPU (TRITON_INTERPRET=0) it runs compiled.
"""

from __future__ import annotations

import pytest
import torch

from d4rt import D4RT
from d4rt.kernels.launch_plan import interpreting
from tests.conftest import make_queries

DEVICE = "cpu" if interpreting() else "cuda"
pytestmark = pytest.mark.skipif(
    not interpreting() and not torch.cuda.is_available(), reason="TRITON_INTERPRET=0 needs a CUDA GPU"
)


def run(model, backend, inputs, loss_weights):
    """Outputs and parameter gradients of a random linear loss of every output, with ``backend`` attention."""
    model.set_attention(backend)
    model.zero_grad(set_to_none=True)
    out = model(*inputs)
    loss = sum((out[name] * loss_weights[name]).sum() for name in sorted(out))
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return {name: t.detach() for name, t in out.items()}, grads


def test_triton_backend_matches_eager(tiny_config):
    cfg = tiny_config.replace(enc_depth=2, dec_depth=2)
    model = D4RT(cfg).to(DEVICE)
    frames = 4  # two temporal slices: two local windows of 64 tokens, a global block over 129
    video = torch.rand(1, frames, 3, cfg.image_size, cfg.image_size, device=DEVICE)
    uv, t_src, t_tgt, t_cam = (t.to(DEVICE) for t in make_queries(1, 24, frames))
    inputs = (video, uv, t_src, t_tgt, t_cam, torch.tensor([1.4], device=DEVICE))
    with torch.no_grad():
        out_eager = model.set_attention("eager")(*inputs)
    weights = {name: torch.randn_like(t) for name, t in out_eager.items()}

    out_eager, grads_eager = run(model, "eager", inputs, weights)
    out_triton, grads_triton = run(model, "triton", inputs, weights)

    for name, ref in out_eager.items():
        err = ((out_triton[name] - ref).norm() / ref.norm()).item()
        assert err <= 1e-4, f"{name}: relative error {err:.2e}"
    assert grads_triton.keys() == grads_eager.keys()
    total = torch.cat([g.flatten() for g in grads_eager.values()]).norm()
    diff = torch.cat([(grads_triton[n] - g).flatten() for n, g in grads_eager.items()]).norm()
    assert diff <= 1e-4 * total, f"gradients: relative error {(diff / total).item():.2e}"
    for name, g in grads_eager.items():  # and no parameter is off on its own (k biases have ~0 gradient: floor)
        assert (grads_triton[name] - g).norm() <= 1e-3 * g.norm() + 1e-6 * total, name
