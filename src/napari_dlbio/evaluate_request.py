"""The Evaluate dock's job as plain data: a truth labels array, its image and the candidates.

Like :class:`napari_dlbio.requests.PredictRequest`, the request is built on the UI
thread (the layers' data copied there, so the user may keep painting) and its
``run`` is a generator: one :class:`CandidateStarted` and one :class:`CandidateScored`
per candidate, so the dock's table fills in as candidates finish; it returns the
whole :class:`~napari_dlbio.scoreboard.Comparison`. Events hold arrays and
dataclasses only (never a model), so napari's process never imports torch to read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from . import comparison
from ._layers import LayerSnapshot
from .comparison import Candidate, Truth
from .jobs import JobContext
from .scoreboard import CandidateResult, Comparison


@dataclass(frozen=True)
class CandidateStarted:
    name: str
    index: int
    total: int

    def text(self) -> str:
        return f"{self.name} ({self.index + 1}/{self.total})"


@dataclass(frozen=True)
class CandidateScored:
    result: CandidateResult


@dataclass
class EvaluateRequest:
    """Score ``candidates`` on the annotated items of ``truth`` (with ``image``'s shape without C).

    Input problems (shapes, nothing annotated, an image given as a candidate) raise a
    ValueError here, before anything is submitted.
    """

    truth: np.ndarray
    truth_name: str
    candidates: list[Candidate]
    image: LayerSnapshot | None = None     # needed by model candidates
    ndim: int = 2
    errors: bool = True                    # also each candidate's error objects (for error layers)
    reference: bool = False                # ``truth`` is a clean image: restoration scored by PSNR/SSIM
    _truth: Truth | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._truth = self.read_truth()
        comparison.check(self._truth, self.candidates)

    def __getstate__(self) -> dict:
        # The job reads the items again from ``truth`` rather than receive the labels twice.
        return {**self.__dict__, "_truth": None}

    def read_truth(self) -> Truth:
        img = self.image
        if self.reference:
            image, axes = (img.data, img.axes) if img is not None else (self.truth, None)
            return comparison.truth_from_reference(self.truth, image, axes, self.ndim, self.truth_name)
        if img is None:
            return comparison.truth_from_arrays(self.truth, ndim=self.ndim, name=self.truth_name)
        return comparison.truth_from_arrays(self.truth, img.data, img.axes, self.ndim, self.truth_name,
                                            img.rgb)

    def item_indices(self) -> dict[str, tuple[int, ...]]:
        """Item name (``z=3``) -> its index over the truth's loop axes (``plan.loop_axes``)."""
        truth = self._truth or self.read_truth()
        return {i.name: i.index for i in truth.items}

    @property
    def loop_dims(self) -> list[int]:
        """The truth array's dimensions that count items (Z of a 2D model on a stack, T, ...)."""
        plan = (self._truth or self.read_truth()).plan
        return [plan.axes.index(a) for a in plan.loop_axes] if plan is not None else []

    def run(self, ctx: JobContext) -> Iterator[CandidateStarted | CandidateScored]:
        truth = self._truth or self.read_truth()
        out, n = Comparison(truth.name, kind=truth.kind), len(self.candidates)
        for k, c in enumerate(self.candidates):
            ctx.check()
            yield CandidateStarted(c.name, k, n)
            result = comparison.score_candidate(truth, c, ctx.span(k, k + 1, n), self.errors)
            out.candidates.append(result)
            yield CandidateScored(result)
        return out
