"""What the docks ask for, as plain data: a training or a prediction job that runs without Qt.

A dock reads its layers and forms into a request on the UI thread (labels are
copied there, so the user may keep painting while the model trains) and hands
``request.run`` to its job runner. Tests build the same requests from arrays,
without a viewer, and run them in the test's thread.

:meth:`PredictRequest.run` is a generator: it yields one event per image
(:class:`ImageStarted`, then :class:`ImageDone` or :class:`ImageFailed`), so a
dock adds each image's layers as soon as it is done, and one bad image does
not lose the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import backends, data, store, tasks
from ._layers import LayerSnapshot, prediction_layers, provenance
from .jobs import Cancelled, JobContext


@dataclass
class TrainRequest:
    """Train (or fine-tune ``start_from``) a model of ``backend`` and save it as ``name``."""

    backend: str
    image: LayerSnapshot
    labels: np.ndarray | None      # a copy, with the image's shape without C; None: self-supervised
    settings: Any                  # the backend's TrainSettings
    name: str                      # the name in the model store
    ndim: int = 2                  # spatial dims the model sees (2: slice by slice, 3: volumes)
    region: np.ndarray | None = None   # train only where True (from a shapes layer)
    start_from: Path | None = None     # a saved model to fine-tune
    labels_name: str = "labels"        # recorded in the provenance

    def __post_init__(self) -> None:
        # Checked here, not in the worker: the user hears about it before anything starts.
        spec = backends.spec(self.backend)
        if self.labels is None and spec.needs_labels:
            raise ValueError(f"the {spec.title} backend learns from labels: choose a labels layer")
        store.check_name(self.name)

    @property
    def axes(self) -> str:
        return self.image.axes

    def training_data(self) -> data.TrainingData:
        part = data.from_arrays(
            self.image.data, self.labels, self.axes, self.ndim, name=self.image.name,
            labels_name=self.labels_name, region=self.region, scribbles=self.settings.scribbles,
            rgb=self.image.rgb,
        )
        return data.combine([part])

    def run(self, ctx: JobContext) -> tasks.TrainOutcome:
        ctx.report(0, 1, "reading the annotated slices", kind="info")
        return tasks.train(self.backend, self.training_data(), self.settings, save_to=self.name, ctx=ctx,
                           start_from=self.start_from)


SourceKind = Literal["saved", "folder", "pretrained"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: the store, a model folder, or a backend's own (pretrained) model."""

    kind: SourceKind
    backend: str
    path: Path | None = None       # saved / folder
    name: str = ""                 # pretrained: the backend's name or file
    created: str = ""              # of a saved model: retraining under the same name makes a new key

    @classmethod
    def saved(cls, info: store.ModelInfo, kind: SourceKind = "saved") -> ModelSource:
        return cls(kind, info.backend, Path(info.path), info.name, info.created)

    @classmethod
    def folder(cls, path: str | Path) -> ModelSource:
        """A model folder picked on disk; a clear ModelError if it holds no model.json."""
        return cls.saved(store.read_info(path), kind="folder")

    @classmethod
    def pretrained(cls, backend: str, name: str) -> ModelSource:
        return cls("pretrained", backend, None, name)

    @property
    def key(self) -> tuple:
        """Identifies the loaded model, for a dock's cache."""
        if self.path is None:
            return ("pretrained", self.backend, self.name)
        return ("store", str(self.path), self.created)

    def load(self):
        if self.path is None:
            return tasks.load_model(self.name, self.backend)
        return tasks.load_model(self.path)


@dataclass(frozen=True)
class ModelLoaded:
    key: tuple
    model: Any


@dataclass(frozen=True)
class ImageStarted:
    name: str
    index: int
    total: int

    def text(self) -> str:
        return f"{self.name} ({self.index + 1}/{self.total})"


@dataclass(frozen=True)
class ImageFailed:
    name: str
    error: BaseException


@dataclass(frozen=True)
class ImageDone:
    image: LayerSnapshot
    prediction: tasks.Prediction
    model: Any


@dataclass
class PredictRequest:
    """Apply one model to a batch of images; ``model`` (already loaded) skips loading ``source``."""

    source: ModelSource | None
    images: list[LayerSnapshot]
    settings: Any = None               # the backend's Predict settings (None: its defaults)
    channels: tuple[int, ...] | None = None
    extras: bool = False               # also output the extra images (probabilities)
    model: Any = None

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("tick at least one image layer to predict on")
        if self.source is None and self.model is None:
            raise ValueError("choose a saved model or a model folder first (train one in the Train dock)")
        if self.extras and self.settings is not None and "probabilities" in type(self.settings).model_fields:
            # The extra images are the class probabilities: the model computes them only when asked.
            self.settings = self.settings.model_copy(update={"probabilities": True})

    def run(self, ctx: JobContext) -> Iterator[ModelLoaded | ImageStarted | ImageFailed | ImageDone]:
        """Load the model unless given, then predict image after image; returns the number of images."""
        model = self.model
        if model is None:
            ctx.report(0, len(self.images), "loading the model", kind="info")
            model = self.source.load()
            yield ModelLoaded(self.source.key, model)
        n = len(self.images)
        for k, snap in enumerate(self.images):
            ctx.check()
            yield ImageStarted(snap.name, k, n)
            try:
                pred = tasks.predict(model, snap.data, snap.axes, self.settings, ctx.span(k, k + 1, n),
                                     rgb=snap.rgb, channels=self.channels)
            except (Cancelled, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - one bad image must not lose the others
                yield ImageFailed(snap.name, exc)
                continue
            if pred.cancelled:
                raise Cancelled("cancelled by the user")
            yield ImageDone(snap, pred, model)
        return n

    def layers(self, done: ImageDone, existing: Iterable[str] = ()) -> list[tuple]:
        """LayerDataTuples for one finished image, named so that no layer in ``existing`` is replaced."""
        prov = provenance(done.model, done.image, self.settings, {"seconds": round(done.prediction.seconds, 2)})
        return prediction_layers(done.prediction, done.image, prov, extras=self.extras, existing=existing)
