"""Where a segmentation fails: its error objects against the truth, for a napari labels layer.

One truth/prediction pair is matched one-to-one at IoU >= 0.5 (as AP@0.5 is,
:func:`napari_dlbio.metrics.matched_pairs`); each object in error is then given one
kind, checked in this order:

- **merge**: a predicted object that holds at least ``share`` (half) of the area of
  two or more true objects: it joins them (drawn with the predicted object's pixels).
- **split**: a true object that holds at least ``share`` of the area of two or more
  predicted objects: they cut it into pieces (drawn with the true object's pixels).
- **false negative**: a true object matched by no predicted object and not part of a
  merge (the true object's pixels).
- **false positive**: a predicted object matched to no true object and not a piece of
  a split (the predicted object's pixels).

A merge or split is reported even when one of its objects also matches (a large
nucleus matched while a small neighbour was swallowed is still a merge); the true
objects a merge swallows and the pieces of a split are not listed again as false
negatives / positives. Correct matches are not in the layer. A false negative and a
false positive may overlap (a prediction much smaller than its nucleus): the larger
object is drawn first, and ``area`` counts the pixels each object shows in the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .axes import ItemPlan
from .metrics import Overlap, matched_pairs, overlap

KINDS = ("false positive", "false negative", "merge", "split")


@dataclass
class ErrorObjects:
    """A labels image (ids 1..n, 0 elsewhere) and its features table (one row per id)."""

    labels: np.ndarray
    features: dict[str, list] = field(default_factory=lambda: {k: [] for k in COLUMNS})

    def counts(self) -> dict[str, int]:
        errors = self.features["error"]
        return {k: errors.count(k) for k in KINDS}


# label: id in ``labels``; error: one of KINDS; area: pixels shown; source: which image the object is
# drawn from ("truth" / "prediction"); object: its id there; item: the slice/frame or file.
COLUMNS = ("label", "error", "area", "source", "object", "item")


def error_objects(true: np.ndarray, pred: np.ndarray, thresh: float = 0.5, share: float = 0.5,
                  item: str = "") -> ErrorObjects:
    """The error objects of ``pred`` against ``true`` (same shape; see the module's definitions)."""
    true, pred = np.asarray(true), np.asarray(pred)
    ov = overlap(true, pred)
    kinds = _classify(ov, thresh, share)
    found = [(int(np.count_nonzero(image == ids[k])), kind, source, int(ids[k]), image)
             for source, image, ids in (("truth", true, ov.true_ids), ("prediction", pred, ov.pred_ids))
             for k, kind in kinds[source].items()]
    out = ErrorObjects(np.zeros(true.shape, np.int32))
    # Largest first: where a false negative and a false positive overlap (a prediction far too
    # small or too large for its nucleus), the smaller one is drawn on top and both stay visible.
    for _, kind, source, obj, image in sorted(found, key=lambda f: -f[0]):
        _add(out, image == obj, kind, source, obj, item)
    _visible_areas(out)
    return out


def _visible_areas(out: ErrorObjects) -> None:
    """``area`` = the pixels each object has in the layer (less where another is drawn over it)."""
    counts = np.bincount(out.labels.ravel(), minlength=len(out.features["label"]) + 1)
    out.features["area"] = [int(counts[lab]) for lab in out.features["label"]]


def _classify(ov: Overlap, thresh: float, share: float) -> dict[str, dict[int, str]]:
    """Row/column index -> error kind, for the truth's and the prediction's objects."""
    counts = ov.counts
    rows, cols = matched_pairs(ov.iou, thresh) if counts.size else ((), ())
    true_in = counts >= share * ov.true_area[:, None]     # true object mostly inside a predicted one
    pred_in = counts >= share * ov.pred_area[None, :]     # predicted object mostly inside a true one
    merges = {int(j) for j in np.flatnonzero(true_in.sum(0) >= 2)}
    splits = {int(i) for i in np.flatnonzero(pred_in.sum(1) >= 2)}
    swallowed = {int(i) for j in merges for i in np.flatnonzero(true_in[:, j])}
    pieces = {int(j) for i in splits for j in np.flatnonzero(pred_in[i])}
    truth = {i: "split" for i in splits}
    for i in set(range(counts.shape[0])) - set(map(int, rows)) - swallowed - splits:
        truth[i] = "false negative"
    predicted = {j: "merge" for j in merges}
    for j in set(range(counts.shape[1])) - set(map(int, cols)) - pieces - merges:
        predicted[j] = "false positive"
    return {"truth": dict(sorted(truth.items())), "prediction": dict(sorted(predicted.items()))}


def _add(out: ErrorObjects, where: np.ndarray, kind: str, source: str, obj: int, item: str) -> None:
    label = len(out.features["label"]) + 1
    out.labels[where] = label
    for col, value in zip(COLUMNS, (label, kind, 0, source, obj, item)):
        out.features[col].append(value)


def combine(parts: list[tuple[tuple, ErrorObjects]], plan: ItemPlan) -> ErrorObjects:
    """Items' error objects placed at their index in the labels stack ``plan`` cuts, ids made unique."""
    out = ErrorObjects(np.zeros(plan.shape, np.int32))
    for index, part in parts:
        offset = len(out.features["label"])
        plan.write(out.labels, index, np.where(part.labels > 0, part.labels + offset, 0))
        for col in COLUMNS:
            values = part.features[col]
            out.features[col] += [v + offset for v in values] if col == "label" else list(values)
    return out
