"""The results of comparing candidates with a truth: per item, per candidate, sorted, as CSV.

The mean over items (the ``all`` row) averages each metric over the items a
candidate scored, as the DSB 2018 and StarDist convention averages AP over images;
items that failed are left out of the mean and named in :attr:`CandidateResult.failures`.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import THRESHOLDS, ObjectStats

ALL = "all"
AP_COLUMNS = tuple(f"AP@{t:.2f}" for t in THRESHOLDS)
METRICS = (*AP_COLUMNS, "precision@0.50", "recall@0.50", "F1@0.50", "mean_iou", "PQ")
CSV_COLUMNS = ("candidate", "item", *METRICS)
DEFAULT_SORT = "AP@0.50"
# Restoration (image outputs) against a clean reference: the comparison's ``kind`` is "image".
IMAGE_METRICS = ("PSNR", "SSIM")
IMAGE_CSV_COLUMNS = ("candidate", "item", *IMAGE_METRICS)
ALL_METRICS = (*METRICS, *IMAGE_METRICS)


def default_sort(kind: str) -> str:
    return "PSNR" if kind == "image" else DEFAULT_SORT


@dataclass
class ItemScore:
    """One candidate on one item: instance matching at each threshold, or other values.

    ``values`` holds what is not instance matching (``mean_iou`` of a semantic model's
    classes); ``error`` says why the item could not be scored.
    """

    item: str
    stats: tuple[ObjectStats, ...] = ()
    values: dict[str, float] = field(default_factory=dict)
    error: str = ""

    def row(self) -> dict[str, float]:
        """The item's metrics under the CSV's column names (NaN where not measured)."""
        out = {m: math.nan for m in ALL_METRICS}
        by_t = {round(s.thresh, 2): s for s in self.stats}
        for col, t in zip(AP_COLUMNS, THRESHOLDS):
            if t in by_t:
                out[col] = by_t[t].ap
        s = by_t.get(0.5)
        if s is not None:
            out.update({"precision@0.50": s.precision, "recall@0.50": s.recall, "F1@0.50": s.f1,
                        "mean_iou": s.mean_iou, "PQ": s.pq})
        out.update({k: v for k, v in self.values.items() if k in out})
        return out


@dataclass
class CandidateResult:
    """Everything measured for one candidate; ``error``: it could not run at all (not loadable)."""

    name: str
    kind: str = "labels"            # "model" or "labels"
    items: list[ItemScore] = field(default_factory=list)
    error: str = ""
    errors: object = None           # error objects for the dock (an errors.ErrorObjects), when asked

    @property
    def scored(self) -> list[ItemScore]:
        return [i for i in self.items if not i.error]

    @property
    def failures(self) -> dict[str, str]:
        """Item -> why it failed."""
        return {i.item: i.error for i in self.items if i.error}

    def mean(self) -> dict[str, float]:
        """Each metric averaged over the scored items (NaN when none was scored)."""
        rows = [i.row() for i in self.scored]
        if not rows:
            return {m: math.nan for m in ALL_METRICS}
        return {m: _nanmean([r[m] for r in rows]) for m in ALL_METRICS}

    def curve(self) -> list[float]:
        """Mean AP at each IoU threshold (the AP-vs-threshold plot's points)."""
        mean = self.mean()
        return [mean[c] for c in AP_COLUMNS]


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, float)
    return math.nan if np.isnan(arr).all() else float(np.nanmean(arr))


@dataclass
class Comparison:
    """All candidates' results, in the order they were given."""

    truth: str
    candidates: list[CandidateResult] = field(default_factory=list)
    kind: str = "labels"            # "image": restoration scored by PSNR/SSIM against a clean reference

    def get(self, name: str) -> CandidateResult:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"no candidate named {name!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        return IMAGE_CSV_COLUMNS if self.kind == "image" else CSV_COLUMNS

    def ranked(self, metric: str = DEFAULT_SORT) -> list[CandidateResult]:
        """Best first by the mean of ``metric``; candidates without a value last."""
        check_metric(metric)

        def key(c: CandidateResult) -> float:
            v = c.mean()[metric]
            return -math.inf if math.isnan(v) else v

        return sorted(self.candidates, key=key, reverse=True)

    def rows(self, metric: str = DEFAULT_SORT) -> list[dict]:
        """CSV rows: per candidate (best first) its items, then its ``all`` row."""
        out = []
        for c in self.ranked(metric):
            for i in c.items:
                out.append({"candidate": c.name, "item": i.item, **i.row()})
            out.append({"candidate": c.name, "item": ALL, **c.mean()})
        return out

    def write_csv(self, path: str | Path, metric: str = DEFAULT_SORT) -> Path:
        """Write :meth:`rows` to ``path`` (through a temporary file: never a half-written CSV)."""
        path = Path(path).expanduser()
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
                w.writeheader()
                for r in self.rows(metric):
                    w.writerow({k: _cell(v) for k, v in r.items()})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6f}"
    return str(v)


def check_metric(metric: str) -> str:
    if metric not in ALL_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(ALL_METRICS)}")
    return metric
