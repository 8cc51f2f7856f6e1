"""Choose the probability and NMS thresholds that segment the validation data best.

As the official ``optimize_thresholds``: for each NMS threshold, the probability
threshold that maximises the mean "accuracy" (AP) over IoU 0.3/0.5/0.7. It is much
cheaper here: greedy NMS keeps a candidate depending only on the more probable ones,
so the objects kept at threshold ``t`` are those kept at the lowest threshold with
probability above ``t``. One NMS per image and NMS threshold, then only rendering.
"""

from __future__ import annotations

import numpy as np

from ...jobs import Deadline, JobContext
from .postprocess import candidates, render

NMS_THRESHS = (0.3, 0.4, 0.5)
IOU_THRESHS = (0.3, 0.5, 0.7)
LOWEST = 0.05
# An undertrained network is unsure everywhere; NMS over every pixel would take minutes.
MAX_CANDIDATES = {2: 5000, 3: 1500}


def floor(prob: np.ndarray) -> float:
    """The lowest probability threshold worth trying: at most MAX_CANDIDATES above it."""
    k = MAX_CANDIDATES[prob.ndim]
    flat = prob.ravel()
    if flat.size <= k:
        return LOWEST
    return max(LOWEST, float(np.partition(flat, flat.size - k)[flat.size - k]))


def score(trues: list[np.ndarray], preds: list[np.ndarray], iou_threshs=IOU_THRESHS) -> float:
    from stardist.matching import matching_dataset

    stats = matching_dataset(trues, preds, thresh=list(iou_threshs), show_progress=False)
    return float(np.mean([s.accuracy for s in stats]))


def optimize(
    outputs: list[tuple[np.ndarray, np.ndarray]],
    trues: list[np.ndarray],
    grid: tuple[int, ...],
    rays=None,
    ctx: JobContext | None = None,
    nms_threshs=NMS_THRESHS,
    iou_threshs=IOU_THRESHS,
    deadline: Deadline | None = None,
) -> dict[str, float]:
    """``{"prob", "nms", "score"}`` from network outputs ``(prob, dist)`` and true labels.

    NMS thresholds are tried in order until ``deadline`` passes (the first always is).
    """
    ctx = ctx or JobContext()
    best = {"prob": 0.5, "nms": 0.4, "score": -1.0}
    total = len(nms_threshs)
    low = round(max(floor(p) for p, _ in outputs), 3)
    for k, nms in enumerate(nms_threshs):
        if k and deadline is not None and deadline.passed():
            break
        cands = []
        for prob, dist in outputs:
            ctx.check()
            cands.append(candidates(prob, dist, grid, low, nms, rays))

        cache: dict[float, float] = {}

        def evaluate(t: float) -> float:
            t = round(float(t), 3)
            if t not in cache:
                ctx.check()
                preds = [render(p[q > t], q[q > t], d[q > t], y.shape, rays)
                         for (p, q, d), y in zip(cands, trues)]
                cache[t] = score(trues, preds, iou_threshs)
            return cache[t]

        # Rendering polyhedra is slow: a coarser search in 3D.
        step, fine_step = (0.05, 0.01) if len(grid) == 2 else (0.1, 0.02)
        coarse = np.round(np.arange(0.1, 0.951, step), 3)
        coarse = np.unique(np.concatenate([[low], coarse[coarse > low]])) if low < 0.95 else np.array([low])
        t0 = _middle_of_best(coarse, evaluate)
        lo, hi = max(low, t0 - step + fine_step), min(0.99, t0 + step - fine_step / 2)
        fine = np.round(np.arange(lo, hi, fine_step), 3)
        t1 = _middle_of_best(fine, evaluate)
        if cache[round(float(t1), 3)] > best["score"]:
            best = {"prob": float(t1), "nms": float(nms), "score": cache[round(float(t1), 3)]}
        ap = cache[round(float(t1), 3)]
        ctx.report(k + 1, total, f"thresholds: nms {nms} -> prob {t1:.2f} (AP {ap:.3f})")
    return best


def _middle_of_best(ts, evaluate) -> float:
    """The middle of the thresholds scoring best: robust when a range of them ties."""
    scores = np.array([evaluate(t) for t in ts])
    best = np.flatnonzero(scores >= scores.max() - 1e-9)
    return float(ts[best[len(best) // 2]])
