"""Segmentation and denoising metrics.

AP@0.5 here is what ``stardist.matching`` calls *accuracy*: objects are matched
one-to-one at IoU >= 0.5 (stardist's convention, IoU in float32 as there) and
AP = TP / (TP + FP + FN). Above 0.5 a match is unique; exact ties at 0.5 are
assigned as stardist does (see :func:`matched_pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Matching:
    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    mean_matched_iou: float

    @property
    def ap(self) -> float:
        d = self.tp + self.fp + self.fn
        return 1.0 if d == 0 else self.tp / d

    @property
    def precision(self) -> float:
        return 1.0 if self.tp + self.fp == 0 else self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        return 1.0 if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 1.0 if d == 0 else 2 * self.tp / d

    def as_dict(self) -> dict:
        return {**asdict(self), "ap": self.ap, "f1": self.f1, "precision": self.precision, "recall": self.recall}


def match(true: np.ndarray, pred: np.ndarray, thresh: float = 0.5) -> Matching:
    """One-to-one matching of instance labels (0 = background) at IoU >= ``thresh``.

    The same matching as :func:`match_thresholds` (and ``stardist.matching``), so every
    figure of the project follows one convention; an empty truth and prediction give AP 1.
    """
    if np.shape(true) != np.shape(pred):
        raise ValueError(f"shapes differ: ground truth {np.shape(true)}, prediction {np.shape(pred)}")
    (s,) = match_thresholds(true, pred, (thresh,))
    return Matching(s.tp, s.fp, s.fn, s.n_true, s.n_pred, s.sum_matched_iou / s.tp if s.tp else 0.0)


def mean_ap(trues: Sequence[np.ndarray], preds: Sequence[np.ndarray], thresh: float = 0.5) -> dict:
    """Mean AP (and F1) over images, as reported in the benchmarks."""
    ms = [match(t, p, thresh) for t, p in zip(trues, preds)]
    if not ms:
        return {"ap": float("nan"), "f1": float("nan"), "n_images": 0}
    return {
        "ap": float(np.mean([m.ap for m in ms])),
        "f1": float(np.mean([m.f1 for m in ms])),
        "n_images": len(ms),
    }


def class_iou(true: np.ndarray, pred: np.ndarray, n_classes: int, ignore: int | None = None) -> list[float]:
    """IoU per class for semantic labels; NaN where a class appears in neither."""
    true, pred = np.asarray(true), np.asarray(pred)
    keep = np.ones(true.shape, bool) if ignore is None else true != ignore
    out = []
    for c in range(n_classes):
        t, p = (true == c) & keep, (pred == c) & keep
        union = (t | p).sum()
        out.append(float((t & p).sum() / union) if union else float("nan"))
    return out


def psnr(clean: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    clean = np.asarray(clean, np.float64)
    test = np.asarray(test, np.float64)
    if data_range is None:
        data_range = float(clean.max() - clean.min())
    mse = float(np.mean((clean - test) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


# --- matching at many IoU thresholds (the Evaluate dock and command) ------------------------------
THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))  # 0.50:0.05:0.95


@dataclass(frozen=True)
class ObjectStats:
    """Instance matching at one IoU threshold, with ``stardist.matching.matching``'s definitions.

    Objects match one-to-one at IoU >= ``thresh``; ``ap`` is StarDist's *accuracy*
    TP / (TP + FP + FN) (the DSB 2018 "AP"), ``pq`` the panoptic quality of Kirillov et
    al. (sum of matched IoUs / (TP + FP/2 + FN/2)). Ratios are 0 when TP is 0, as in
    StarDist (so an empty truth with an empty prediction scores 0, not 1).
    """

    thresh: float
    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    sum_matched_iou: float

    def _ratio(self, num: float, den: float) -> float:
        return float(num / den) if self.tp > 0 and den > 0 else 0.0

    @property
    def ap(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def mean_iou(self) -> float:
        """Mean IoU of the matched pairs."""
        return self._ratio(self.sum_matched_iou, self.tp)

    @property
    def pq(self) -> float:
        return self._ratio(self.sum_matched_iou, self.tp + self.fp / 2 + self.fn / 2)


@dataclass(frozen=True)
class Overlap:
    """Pixel overlaps of the objects of a truth and a prediction (background dropped)."""

    counts: np.ndarray      # (n_true, n_pred) pixels in common
    true_ids: np.ndarray    # the label id of each row
    pred_ids: np.ndarray    # the label id of each column
    true_area: np.ndarray
    pred_area: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        # float32, as stardist computes it: a ratio such as 7/10 must compare with a threshold
        # exactly as there (float32(0.7) >= 0.7 under NumPy 2's rules), or AP@0.70 could differ.
        union = self.true_area[:, None] + self.pred_area[None, :] - self.counts
        out = np.zeros(self.counts.shape, np.float32)
        np.divide(self.counts, union, out=out, where=union > 0)
        return out


def overlap(true: np.ndarray, pred: np.ndarray) -> Overlap:
    """The overlap table of two label images of the same shape (0 = background)."""
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {true.shape}, prediction {pred.shape}")
    t_ids, t = np.unique(true, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    flat = t.ravel().astype(np.int64) * len(p_ids) + p.ravel()
    counts = np.bincount(flat, minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), len(p_ids))
    t_area, p_area = counts.sum(1), counts.sum(0)
    rows, cols = t_ids != 0, p_ids != 0
    return Overlap(counts[rows][:, cols], t_ids[rows], p_ids[cols], t_area[rows], p_area[cols])


def matched_pairs(iou: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one matches at IoU >= ``thresh`` (>= 0.5).

    Above 0.5 an object can pass the threshold with one partner at most, so the pairs
    are simply those that pass. Only exact ties at 0.5 (two objects each with IoU 0.5)
    need an assignment: then, as in stardist, the most matches with the IoUs as
    tie-breaker (scipy's linear_sum_assignment).
    """
    hits = iou >= thresh
    if (hits.sum(0) <= 1).all() and (hits.sum(1) <= 1).all():
        return np.nonzero(hits)
    from scipy.optimize import linear_sum_assignment

    n = min(iou.shape)
    rows, cols = linear_sum_assignment(-(hits.astype(float)) - iou / (2 * n))
    ok = hits[rows, cols]
    return rows[ok], cols[ok]


def match_thresholds(true: np.ndarray, pred: np.ndarray,
                     thresholds: Sequence[float] = THRESHOLDS) -> tuple[ObjectStats, ...]:
    """:class:`ObjectStats` at each threshold, all from one IoU matrix."""
    if any(t < 0.5 for t in thresholds):
        raise ValueError("only IoU thresholds >= 0.5 give a unique matching")
    ov = overlap(true, pred)
    iou = ov.iou
    n_true, n_pred = iou.shape
    out = []
    for t in thresholds:
        rows, cols = matched_pairs(iou, t) if iou.size else (np.zeros(0, int), np.zeros(0, int))
        tp = len(rows)
        out.append(ObjectStats(float(t), tp, n_pred - tp, n_true - tp, n_true, n_pred,
                               float(np.sum(iou[rows, cols], dtype=np.float64))))
    return tuple(out)


def ssim(clean: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity (scikit-image's) of ``test`` against ``clean``, range from ``clean``."""
    from skimage.metrics import structural_similarity

    clean = np.asarray(clean, np.float64)
    test = np.asarray(test, np.float64)
    if clean.shape != test.shape:
        raise ValueError(f"shapes differ: clean {clean.shape}, result {test.shape}")
    if data_range is None:
        data_range = float(clean.max() - clean.min()) or 1.0
    return float(structural_similarity(clean, test, data_range=data_range))
