"""Per-object tables: the score, area and centroid of every object of an instance prediction.

A labels backend's ``postprocess`` (or ``predict``) may return, next to ``labels``, an
:data:`OBJECTS` entry: a float array of per-object scores in [0, 1] **indexed by label
id** (entry 0, the background, is unused). What a score means is the backend's to say
(StarDist: the object probability; Cellpose: the mean cell probability; U-Net: the mean
foreground probability); everything else is measured here, once for all backends: the
area in pixels, the centroid in the output's coordinates (the item's index on the loop
axes of a stack) and, for stacks, the same id offset the labels get. With the prediction
setting ``flip_agreement`` the model also predicts flipped copies
(:func:`flip_agreement`): the table gains an ``agreement`` column and the score is the
backend's score times the agreement.

A table is a dict of equal-length numpy columns ``label, score, area, centroid_<axis>...``
(``agreement`` last when asked for); plain data: it crosses from the job's process to
napari's and pickles as it is.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

OBJECTS = "objects"  # the key of the per-object scores (float, indexed by label id) in a model's outputs
AGREEMENT = "agreement"  # the key of the objects' test-time flip agreement (same indexing), when asked for
SHAPES = "shapes"  # a model may return a list of (N_vertices, ndim) float arrays under this key

Table = dict[str, np.ndarray]


def mean_per_object(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over each object of ``labels``: float32 indexed by label id.

    Ids absent from ``labels`` (and the background, 0) get 0. Values are clipped to [0, 1].
    """
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if labels.size else 1
    flat = labels.ravel()
    sums = np.bincount(flat, weights=np.asarray(values, np.float64).ravel(), minlength=n)
    counts = np.bincount(flat, minlength=n)
    means = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
    means[0] = 0.0
    return np.clip(means, 0.0, 1.0).astype(np.float32)


def best_iou(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each object of ``labels`` (indexed by id): its highest IoU with an object of ``other``."""
    a = np.asarray(labels).ravel().astype(np.int64)
    b = np.asarray(other).ravel().astype(np.int64)
    n = int(a.max()) + 1 if a.size else 1
    area_a, area_b = np.bincount(a, minlength=n), np.bincount(b)
    both = (a > 0) & (b > 0)
    # Overlapping pairs only (a dense id x id matrix is too large for many objects).
    pairs, inter = np.unique(a[both] * len(area_b) + b[both], return_counts=True)
    ia, ib = np.divmod(pairs, len(area_b))
    iou = inter / (area_a[ia] + area_b[ib] - inter)
    out = np.zeros(n)
    np.maximum.at(out, ia, iou)
    return out.astype(np.float32)


def flip_agreement(predict_labels, item: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per object (indexed by id): how well the model finds it again in flipped copies of ``item``.

    ``item`` is (C, *spatial); ``predict_labels`` maps an item to its labels. For each
    spatial axis the item is flipped, predicted and flipped back; an object's agreement
    is the mean over these flips of its best IoU with an object found there: 1 for an
    object the model draws the same way whatever the orientation, near 0 for one it
    finds only by chance (one prediction per spatial axis more).
    """
    total = np.zeros(int(np.max(labels, initial=0)) + 1, np.float64)
    for ax in range(1, item.ndim):
        flipped = predict_labels(np.ascontiguousarray(np.flip(item, ax)))
        total += best_iou(labels, np.flip(flipped, ax - 1))
    return (total / max(1, item.ndim - 1)).astype(np.float32)


def measure(labels: np.ndarray, scores: np.ndarray, axes: str) -> Table:
    """One row per object id present in ``labels`` (spatial ``axes``, e.g. ``"YX"``).

    Columns ``label, score, area`` (pixels) and ``centroid_<axis>`` (pixel coordinates
    of the object's mean position). A clear error when ``scores`` lacks an id.
    """
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0:
        raise ValueError("object tables need labels >= 0")
    flat = labels.ravel().astype(np.intp, copy=False)
    counts = np.bincount(flat)
    ids = np.flatnonzero(counts)
    ids = ids[ids > 0]
    scores = np.asarray(scores, np.float32).ravel()
    if len(ids) and ids[-1] >= len(scores):
        raise ValueError(f"the model gave scores for label ids up to {len(scores) - 1} but its labels "
                         f"hold id {ids[-1]}")
    table: Table = {"label": ids.astype(np.int64), "score": np.clip(scores[ids], 0.0, 1.0),
                    "area": counts[ids].astype(np.int64)}
    for d, a in enumerate(axes):
        # Sum of coordinates along one axis per id, without an (ndim, *shape) index array.
        shape = [1] * labels.ndim
        shape[d] = labels.shape[d]
        coord = np.broadcast_to(np.arange(labels.shape[d], dtype=np.float64).reshape(shape), labels.shape)
        sums = np.bincount(flat, weights=coord.ravel(), minlength=len(counts))
        table[f"centroid_{a.lower()}"] = sums[ids] / counts[ids]
    return table


def empty(axes: str) -> Table:
    """A table without rows, with the columns of ``axes``."""
    table: Table = {"label": np.zeros(0, np.int64), "score": np.zeros(0, np.float32),
                    "area": np.zeros(0, np.int64)}
    table.update({f"centroid_{a.lower()}": np.zeros(0) for a in axes})
    return table


class ObjectTables:
    """Collects the tables of a stack's items into one, in the output's coordinates.

    ``spatial``: the item's axes; ``out_axes``: the labels output's axes (loop axes
    first, no C). ``add`` takes an item's labels *after* the stack offset, so the rows
    name the ids of the output image.
    """

    def __init__(self, spatial: str, out_axes: str) -> None:
        self.spatial, self.out_axes = spatial, out_axes.replace("C", "")
        self.parts: list[Table] = []
        self.agreement = False

    def add(self, where: dict[str, int], labels: np.ndarray, scores: np.ndarray, offset: int = 0,
            agreement: np.ndarray | None = None) -> None:
        """One item: ``where`` gives its index on each loop axis; ``offset`` was added to its ids.

        With ``agreement`` (flip agreement, indexed like ``scores``) the score is the
        product of the two, and the agreement gets a column of its own.
        """
        scores = _shifted(scores, offset)
        part = measure(labels, scores, self.spatial)
        if agreement is not None:
            self.agreement = True
            part[AGREEMENT] = np.clip(_shifted(agreement, offset)[part["label"]], 0.0, 1.0)
            part["score"] = part["score"] * part[AGREEMENT]
        for a, i in where.items():
            part[f"centroid_{a.lower()}"] = np.full(len(part["label"]), float(i))
        self.parts.append(part)

    def table(self) -> Table:
        cols = ["label", "score", "area"] + [f"centroid_{a.lower()}" for a in self.out_axes]
        cols += [AGREEMENT] if self.agreement else []
        if not self.parts:
            return empty(self.out_axes)
        return {c: np.concatenate([p[c] for p in self.parts]) for c in cols}


def _shifted(per_id: np.ndarray, offset: int) -> np.ndarray:
    """Values indexed by item ids -> by output ids (ids offset by ``offset``; 0 stays background)."""
    per_id = np.asarray(per_id, np.float32)
    return np.concatenate([np.zeros(offset + 1, np.float32), per_id[1:]]) if offset else per_id


def columns(table: Table) -> list[str]:
    return list(table)


def write_csv(table: Table, path: str | Path) -> Path:
    """``table`` as CSV at ``path`` (written aside and renamed: never half a file under that name)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    cols = columns(table)
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for row in zip(*(table[c] for c in cols)):
                w.writerow([_cell(v) for v in row])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _cell(v) -> str:
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    return f"{float(v):.6g}"


def features(table: Table) -> dict[str, np.ndarray]:
    """A napari labels layer's ``features``: the table plus ``index`` = label id (napari's key)."""
    return {"index": np.asarray(table["label"]), **{k: np.asarray(v) for k, v in table.items()}}
