"""The StarDist loss: probability BCE plus distance MAE weighted by the object probability."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def stardist_loss(
    out: torch.Tensor,
    prob: torch.Tensor,
    dist: torch.Tensor,
    valid: torch.Tensor,
    prob_weight: float = 1.0,
    dist_weight: float = 0.2,
    background_reg: float = 1e-4,
) -> torch.Tensor:
    """``out`` (B, 1+R, *sub) with probability *logits*; targets (B, *sub), (B, R, *sub).

    ``valid`` (B, *sub) marks pixels with labels (padding and unannotated parts are 0).
    The distance term follows the official ``masked_loss_mae``: the per-pixel mean
    absolute error over rays, weighted by the target probability and normalised by the
    mean weight, plus a small penalty on distances predicted for the background.
    """
    logits, pred = out[:, 0], out[:, 1:]
    valid = valid.to(out.dtype)
    n_valid = valid.sum().clamp_min(1.0)
    bce = F.binary_cross_entropy_with_logits(logits, prob, reduction="none")
    prob_loss = (bce * valid).sum() / n_valid
    weight = prob * valid
    err = (pred - dist).abs().mean(1)
    dist_loss = (weight * err).sum() / weight.sum().clamp_min(1e-6)
    if background_reg > 0:
        bg = (1 - prob) * valid
        dist_loss = dist_loss + background_reg * (bg * pred.abs().mean(1)).sum() / n_valid
    return prob_weight * prob_loss + dist_weight * dist_loss
