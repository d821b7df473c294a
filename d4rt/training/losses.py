"""The paper's training losses for D4RT's six heads.

    L = w_3d * mean(c * l_3d) + w_conf * mean(-log c) + w_2d * L_2d + w_vis * L_vis + w_disp * L_disp
        + w_normal * L_normal

- l_3d (per query): prediction and target are each divided by their own mean depth over the clip's valid queries
  (mean |z|: a t_cam camera may face away from some points), then mapped by sign(x) log(1 + |x|), then L1 (mean
  over x, y, z). The model is free in its global scale; the log compresses far points.
- c = sigmoid(confidence logit) weighs l_3d; -log c keeps it from going to 0.
- L_2d: L1 of normalised uv at t_tgt, on queries whose target lies in front of camera t_tgt (``valid_uv``).
- L_vis: binary cross-entropy of the visibility logit.
- L_disp: L1 of the displacement, each side divided by the same mean depth as its 3-D points.
- L_normal: 1 - cos(predicted, target normal).

Confidence collapse (known failure): at the start l_3d is large, and the minimiser of c * l + w_conf * (-log c),
c = w_conf / l, is small, so the 3-D gradient (scaled by c) is starved and the model stops learning geometry.
Guard: for the first ``confidence_warmup_steps`` steps c is held at 1 (the 3-D term is plain L1 and the confidence
head gets no loss), so geometry is learnt first; afterwards c is trained as usual. We chose a warm-up over a
floor on c because it leaves the paper's loss untouched once training is under way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossWeights:
    """Weights of the loss terms (the paper's defaults)."""

    xyz: float = 1.0
    uv: float = 0.1
    visibility: float = 0.1
    displacement: float = 0.1
    confidence: float = 0.2
    normal: float = 0.5

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [...] over mask [...] (bool); 0 when the mask is empty."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def signed_log(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|)."""
    return torch.sign(x) * torch.log1p(x.abs())


def mean_depth(xyz: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-clip mean |z| over valid queries: xyz [B, N, 3], mask [B, N] -> [B, 1, 1]."""
    m = mask.to(xyz.dtype)
    mean = (xyz[..., 2].abs() * m).sum(1) / m.sum(1).clamp(min=1.0)
    return mean.clamp(min=eps)[:, None, None]


def d4rt_losses(
    pred: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    weights: LossWeights = LossWeights(),
    hold_confidence: bool = False,
) -> dict[str, torch.Tensor]:
    """All loss terms and their weighted sum.

    Args:
        pred: the model's outputs: xyz [B, N, 3], uv [B, N, 2], visibility [B, N] (logit), displacement [B, N, 3],
            normal [B, N, 3], confidence [B, N] (logit).
        batch: gt_3d, gt_uv, gt_visibility, gt_displacement, gt_normal, valid [B, N] and valid_uv [B, N]
            (see :class:`d4rt.data.dataset.D4RTDataset`).
        hold_confidence: hold c at 1 (the confidence warm-up; see the module doc).
    Returns:
        {"loss": weighted total, "xyz", "confidence", "uv", "visibility", "displacement", "normal": unweighted
        terms (float32 scalars)}.
    """
    valid, valid_uv = batch["valid"], batch["valid_uv"]
    p = {k: v.float() for k, v in pred.items()}
    gt_xyz = batch["gt_3d"].float()
    scale_pred, scale_gt = mean_depth(p["xyz"], valid), mean_depth(gt_xyz, valid)

    l3d = (signed_log(p["xyz"] / scale_pred) - signed_log(gt_xyz / scale_gt)).abs().mean(-1)  # [B, N]
    if hold_confidence:
        xyz = masked_mean(l3d, valid)
        conf = torch.zeros((), device=l3d.device)
    else:
        c = torch.sigmoid(p["confidence"])
        xyz = masked_mean(c * l3d, valid)
        conf = masked_mean(-F.logsigmoid(p["confidence"]), valid)

    terms = {
        "xyz": xyz,
        "confidence": conf,
        "uv": masked_mean((p["uv"] - batch["gt_uv"].float()).abs().mean(-1), valid_uv),
        "visibility": masked_mean(
            F.binary_cross_entropy_with_logits(p["visibility"], batch["gt_visibility"].float(), reduction="none"), valid
        ),
        "displacement": masked_mean(
            (p["displacement"] / scale_pred - batch["gt_displacement"].float() / scale_gt).abs().mean(-1), valid
        ),
        "normal": masked_mean(1.0 - F.cosine_similarity(p["normal"], batch["gt_normal"].float(), dim=-1), valid),
    }
    w = weights.to_dict()
    terms["loss"] = sum(w[name] * value for name, value in terms.items())
    return terms
