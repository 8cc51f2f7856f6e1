"""Validation metrics of any model on labelled samples, written once for every backend.

Instances: AP@0.5 and F1 (matched objects); semantic: IoU per class; images:
PSNR against a clean target. Network outputs already computed on the same
samples (threshold tuning right after training) are reused, so a training job
never runs its network twice over the validation images.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import Sample
from .jobs import JobContext
from .metrics import class_iou, match, psnr


def predictions(model, samples: Sequence[Sample], ctx: JobContext, raw: Sequence | None = None,
                settings=None):
    """``model``'s outputs on each sample (post-processing ``raw`` where given), one at a time."""
    settings = model.coerce_predict(settings)
    for k, s in enumerate(samples):
        ctx.check()
        cached = raw[k] if raw is not None and k < len(raw) else None
        if cached is None:
            yield model.predict(s.image, settings, ctx)
        else:
            yield model.postprocess(cached, settings, ctx)


def evaluate_predictions(model, samples: Sequence[Sample], ctx: JobContext | None = None,
                         raw: Sequence | None = None) -> dict[str, Any]:
    ctx = ctx or JobContext()
    aps, f1s, ious, psnrs = [], [], [], []
    for s, res in zip(samples, predictions(model, samples, ctx, raw)):
        if model.output == "image":
            if s.target is not None:
                psnrs.append(psnr(s.target, res["image"][0]))
            continue
        pred, true = res["labels"], s.target
        if model.semantic:
            n = model.n_classes or int(true.max()) + 1
            ious.append(class_iou(true, pred, n, 0 if model.settings.scribbles else None))
            continue
        if s.mask is not None:
            pred = np.where(s.mask, pred, 0)
        m = match(true, pred)
        aps.append(m.ap)
        f1s.append(m.f1)
    return summarize(len(samples), aps, f1s, ious, psnrs)


def summarize(n: int, aps: list, f1s: list, ious: list, psnrs: list) -> dict[str, Any]:
    out: dict[str, Any] = {"n_val": n}
    if aps:
        out["ap50"], out["f1"] = float(np.mean(aps)), float(np.mean(f1s))
    if ious:
        with warnings.catch_warnings():
            # A class absent from every image (class 0 with scribbles) is NaN, by design.
            warnings.simplefilter("ignore", RuntimeWarning)
            per = np.nanmean(np.array(ious, dtype=float), axis=0)
        out["iou_per_class"] = [None if np.isnan(v) else float(v) for v in per]
        out["mean_iou"] = float(np.nanmean(per))
    if psnrs:
        out["psnr"] = float(np.mean(psnrs))
    return out

