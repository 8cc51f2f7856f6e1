"""Validation scores of restoration models: N2V's masked loss, CARE/N2N's loss and PSNR on pairs."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...jobs import JobContext
from ...metrics import psnr


def _crop(x: np.ndarray, mult: int) -> tuple[slice, ...]:
    """The largest part of an item (C, *spatial) whose spatial sides are multiples of ``mult``."""
    return (slice(None),) + tuple(slice(0, d // mult * mult) for d in x.shape[1:])


def masked_loss(model, samples: list, ctx: JobContext) -> dict[str, Any]:
    """Masked N2V loss on held-out images (lower is better; the noise sets its floor).

    N2V has no clean target, so no PSNR is claimed; this loss compares predictions
    with noisy pixels and is only comparable between models on the same data.
    """
    import torch
    from careamics.lightning.modules.n2v_utils import N2VManipulate
    from careamics.losses import n2v_loss

    if not samples:
        return {"n_val": 0}
    norm = model._normalization()
    manip = N2VManipulate(model.config.algorithm_config.n2v_config.model_copy(update={"seed": 12345}))
    net = model.module.model.cpu().eval()
    mult = 2 ** model.config.algorithm_config.model.depth
    losses = []
    with torch.no_grad():
        for s in samples:
            ctx.check()
            x, _ = norm(model._pre(model.check_item(s.image))[0])
            x = x[_crop(x, mult)]
            if min(x.shape[1:]) < mult:
                continue
            t = torch.from_numpy(np.ascontiguousarray(x))[None]
            masked, original, mask = manip(t)
            losses.append(float(n2v_loss(net(masked), original, mask)))
    out: dict[str, Any] = {"n_val": len(samples)}
    if losses:
        out["n2v_val_loss"] = float(np.mean(losses))
    return out


def pair_scores(model, samples: list, ctx: JobContext) -> dict[str, Any]:
    """CARE/N2N: the training loss (normalised units) and PSNR against the target on held-out pairs.

    One plain pass of the network per pair (no tiling, no test-time averaging): the
    same network the training validated, in a fraction of a prediction's time. For
    N2N the target is noisy, so its PSNR is a floor, comparable between models only.
    """
    import torch

    if not samples:
        return {"n_val": 0}
    norm = model._normalization()
    net = model.module.model.cpu().eval()
    mult = 2 ** model.config.algorithm_config.model.depth
    mse = model.config.algorithm_config.loss == "mse"
    losses, psnrs = [], []
    with torch.no_grad():
        for s in samples:
            ctx.check()
            x, lo, scale = model._pre(model.check_item(s.image))
            crop = _crop(x, mult)
            if min(x[crop].shape[1:]) < mult:
                continue
            xn, tn = norm(x[crop], ((s.target_image[crop] - lo) / scale).astype(np.float32))
            y = net(torch.from_numpy(np.ascontiguousarray(xn))[None])[0]
            diff = y - torch.from_numpy(np.ascontiguousarray(tn))
            losses.append(float((diff**2).mean() if mse else diff.abs().mean()))
            out = norm.denormalize(y[None])[0].numpy() * scale + lo
            psnrs.append(psnr(s.target_image[crop], out))
    res: dict[str, Any] = {"n_val": len(samples)}
    if losses:
        res["pair_val_loss"], res["psnr"] = float(np.mean(losses)), float(np.mean(psnrs))
    return res
