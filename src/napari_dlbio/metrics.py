"""Segmentation and denoising metrics.

AP@0.5 here is what ``stardist.matching`` calls *accuracy*: objects are matched
one-to-one at IoU > 0.5 and AP = TP / (TP + FP + FN). At a threshold above 0.5 a
match is unique, so no assignment problem needs solving.
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


def _iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t_ids, t = np.unique(true, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    overlap = np.zeros((len(t_ids), len(p_ids)), np.int64)
    np.add.at(overlap, (t.ravel(), p.ravel()), 1)
    t_area = overlap.sum(1, keepdims=True)
    p_area = overlap.sum(0, keepdims=True)
    iou = overlap / np.maximum(t_area + p_area - overlap, 1)
    return iou, t_ids, p_ids


def match(true: np.ndarray, pred: np.ndarray, thresh: float = 0.5) -> Matching:
    """One-to-one matching of instance labels (0 = background) at IoU > ``thresh``."""
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {true.shape}, prediction {pred.shape}")
    if thresh < 0.5:
        raise ValueError("only thresholds >= 0.5 give a unique matching")
    iou, t_ids, p_ids = _iou_matrix(np.asarray(true), np.asarray(pred))
    iou = iou[t_ids != 0][:, p_ids != 0]
    hits = iou > thresh
    tp = int(hits.sum())
    n_true, n_pred = iou.shape
    mean_iou = float(iou[hits].mean()) if tp else 0.0
    return Matching(tp, n_pred - tp, n_true - tp, n_true, n_pred, mean_iou)


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
