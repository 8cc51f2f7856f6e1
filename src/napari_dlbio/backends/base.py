"""The Backend protocol every model family implements.

A backend module exposes one object satisfying :class:`Backend`; the registry
imports it only when chosen. A :class:`Model` is a loaded or new network of that
backend. The shared job runner (:mod:`napari_dlbio.tasks`) does everything
around it: axes, iteration over T/Z, provenance, saving, progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..config import PredictSettings, Settings, TrainSettings
    from ..data import Sample
    from ..jobs import JobContext
    from ..store import ModelInfo
    from ..training import FitResult

OutputKind = Literal["labels", "image"]


@runtime_checkable
class Model(Protocol):
    backend: ClassVar[str]
    output: ClassVar[OutputKind]
    settings: Settings          # architecture + training settings, saved in model.json
    ndim: int                   # spatial dims of one item (2 or 3)
    n_channels: int             # input channels of one item
    info: ModelInfo | None      # set when loaded from / saved to the store

    def predict(self, item: np.ndarray, settings: PredictSettings, ctx: JobContext) -> dict[str, np.ndarray]:
        """One item ``(C, *spatial)`` float32, raw intensities -> named outputs.

        Labels backends return ``{"labels": int32 (*spatial), ...}`` and may add
        float images such as ``"probability"``; image backends return
        ``{"image": float32 (C', *spatial)}``.
        """

    def train(
        self, train: list[Sample], val: list[Sample], settings: TrainSettings, ctx: JobContext
    ) -> FitResult:
        """Train (or fine-tune) in place; keep the best weights even when cancelled.

        ``settings`` is the backend's Settings; when fine-tuning, architecture
        fields of the loaded model win and the model updates ``self.settings`` with
        the new training fields. Most backends call :func:`napari_dlbio.training.fit`.
        """

    def save_weights(self, folder: Path) -> None:
        """Write the backend's own files into ``folder`` (model.json is the store's)."""

    # Optional: ``evaluate(samples, ctx) -> dict`` replaces the runner's default
    # validation metrics (AP@0.5/F1 for instances, IoU per class, PSNR).


class Backend(Protocol):
    name: str                   # "unet", "cellpose", "stardist", "n2v"
    title: str                  # shown in the GUI
    output: OutputKind
    Settings: type[Settings]    # new-model/training settings
    Predict: type[PredictSettings]
    requires: tuple[str, ...]   # import names that must be installed

    def new(self, settings: Settings, n_channels: int, ndim: int) -> Model: ...

    def load(self, info: ModelInfo) -> Model: ...

    def pretrained(self, name_or_path: str) -> Model:
        """A model that is not ours (Cellpose/StarDist names, files); fail fast offline."""
        ...
