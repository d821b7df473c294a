"""The float16 variant: weights and activations in float16, what overflows in float32.

TensorRT 11 dropped the FP16 builder flag: precision comes from the graph (a strongly typed network). So the
float16 graph is exported from a float16 copy of the model in which

- every LayerNorm computes its statistics in float32: x is cast to float32, normalised with float32 weight and
  bias, and cast back (a single-node LayerNormalization between two Casts in the ONNX graph);
- attention runs on the "eager" path, whose softmax is already float32 (Cast, Softmax, Cast);
- the query embedding keeps its Fourier features and RGB-patch sampling in float32 (the model does so for any
  weight dtype), and the graphs' float outputs are cast back to float32 by the wrappers (graphs.py).

keys and values are float16 (half the memory on the device); video, aspect_ratio and uv stay float32 inputs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Float32LayerNorm(nn.LayerNorm):
    """LayerNorm whose statistics are float32 whatever the input dtype; the output has the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


def to_float16(model: nn.Module) -> nn.Module:
    """A float16 copy of ``model`` with float32 LayerNorms (weights and statistics) and eager attention.

    The original model is untouched. LayerNorm parameters are copied from the float32 original (not rounded to
    float16 and back). Every other parameter is converted on its way into the copy, so the float32 weights are
    never held twice (for g: 4.65 GB float32 + 2.3 GB float16 at the peak, not 2 x 4.65 GB).
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    # deepcopy returns what its memo holds for an object: seed it with the float16 parameters.
    memo = {id(p): nn.Parameter(p.detach().half(), requires_grad=p.requires_grad)
            for p in model.parameters() if id(p) not in norm_params}
    half = copy.deepcopy(model, memo)
    for module in list(half.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm) and not isinstance(child, Float32LayerNorm):
                norm = Float32LayerNorm(child.normalized_shape, child.eps, child.elementwise_affine)
                norm.load_state_dict(child.state_dict())
                setattr(module, name, norm)
    half.set_attention("eager")
    return half.eval()
