"""What the docks ask for, as plain data: a training or a prediction job that runs without Qt.

A dock reads its layers and forms into a request on the UI thread (labels are
copied there, so the user may keep painting while the model trains) and submits
it to an executor (:mod:`napari_dlbio.execution`): the docks' runs in a job
process. Tests build the same requests from arrays, without a viewer, and run
them in the test's thread.

Requests and everything their ``run`` yields or returns are plain, picklable
data (arrays, names, settings): never a live model, so napari's process never
needs torch to read them. Loaded models stay where the job runs, in
:data:`MODELS` (a trained model is put there too, so "Predict with this model"
does not load it again).

:meth:`PredictRequest.run` is a generator: it yields one event per image
(:class:`ImageStarted`, then :class:`ImageDone` or :class:`ImageFailed`), so a
dock adds each image's layers as soon as it is done, and one bad image does
not lose the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends, data, pairs, store, suggest, to_store
from ._layers import LayerSnapshot, prediction_layers, provenance
from .jobs import Cancelled, JobContext
from .model_source import ModelRef, ModelSource, SourceKind  # noqa: F401 - requests' public names
from .modelcache import MODELS, ModelCache  # noqa: F401 - the cache lives apart so block tasks need not import this

if TYPE_CHECKING:
    from .tasks import Prediction, TrainOutcome


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
    target: LayerSnapshot | None = None  # the target image of CARE/Noise2Noise (same shape as image)
    notes: list[str] = field(default_factory=list)  # what was ignored, for the dock to show

    def __post_init__(self) -> None:
        # Checked here, not in the worker: the user hears about it before anything starts.
        spec = backends.spec(self.backend)
        if self.labels is None and spec.needs_labels:
            raise ValueError(f"the {spec.title} backend learns from labels: choose a labels layer")
        self._check_target()
        store.check_name(self.name)

    def _check_target(self) -> None:
        """A target where the settings need one, of the image's shape; ignored (with a note) elsewhere."""
        needs = self.settings.needs_targets()
        if needs and self.target is None:
            raise ValueError(f"choose a target image layer: {self.settings.target_help()}")
        if not needs and self.target is not None:
            self.notes.append(f"the target {self.target.name!r} is ignored: the chosen algorithm learns from "
                              "the images alone")
            self.target = None
        if self.target is not None:
            pairs.check_same_shape(self.image.shape, self.target.shape, self.image.name, self.target.name)

    @property
    def axes(self) -> str:
        return self.image.axes

    def training_data(self) -> data.TrainingData:
        if self.target is not None:
            return pairs.from_pairs(self.image.data, self.target.data, self.axes, self.ndim, name=self.image.name,
                                    target_name=self.target.name, rgb=self.image.rgb)
        part = data.from_arrays(
            self.image.data, self.labels, self.axes, self.ndim, name=self.image.name,
            labels_name=self.labels_name, region=self.region, scribbles=self.settings.scribbles,
            rgb=self.image.rgb,
        )
        return data.combine([part])

    def run(self, ctx: JobContext) -> TrainSummary:
        for note in self.notes:
            ctx.report(0, 1, note, kind="info")
        ctx.report(0, 1, "reading the annotated slices", kind="info")
        from . import tasks   # here, not at the top: napari's process reads requests, only jobs run them

        outcome = tasks.train(self.backend, self.training_data(), self.settings, save_to=self.name, ctx=ctx,
                              start_from=self.start_from)
        summary = TrainSummary.of(outcome)
        MODELS.put(summary.source.key, outcome.model)
        return summary


@dataclass(frozen=True)
class TrainSummary:
    """A finished training as plain data: where the model was saved, its metrics and loss history."""

    backend: str
    name: str
    path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "completed"
    source: ModelSource | None = None

    @classmethod
    def of(cls, outcome: TrainOutcome) -> TrainSummary:
        model, fit = outcome.model, outcome.fit
        info = model.info
        return cls(model.backend, info.name if info is not None else "", outcome.path, dict(outcome.metrics),
                   list(fit.history) if fit is not None else [], fit.stopped if fit is not None else "completed",
                   ModelSource.saved(info) if info is not None else None)


@dataclass(frozen=True)
class ModelLoaded:
    key: tuple
    model: ModelRef


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
    image: LayerSnapshot           # the source's name and geometry (its data stays behind)
    prediction: Prediction
    model: ModelRef


@dataclass(frozen=True)
class OutputChoice:
    """Results on disk: one OME-Zarr store per image in ``folder``, predicted block by block.

    ``cluster``: None runs the blocks in the job process; ``local:N`` or a scheduler
    address (``tcp://host:port``) runs them on dask.distributed workers, which read
    the image from its file and write their blocks straight into the store.
    """

    folder: str
    cluster: str | None = None
    block_size: int | None = None      # pixels per block edge (None: from the memory budget)
    overlap: int | None = None         # pixels of context around a block (None: from the model)


@dataclass
class PredictRequest:
    """Apply one model (loaded from ``source`` unless :data:`MODELS` has it) to a batch of images."""

    source: ModelSource | None
    images: list[LayerSnapshot]
    settings: Any = None               # the backend's Predict settings (None: its defaults)
    channels: tuple[int, ...] | None = None
    extras: bool = False               # also output the extra images (probabilities)
    output: OutputChoice | None = None  # None: results in memory, as layers

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("tick at least one image layer to predict on")
        if self.source is None:
            raise ValueError("choose a saved model or a model folder first (train one in the Train dock)")
        if self.extras and self.settings is not None and "probabilities" in type(self.settings).model_fields:
            # The extra images are the class probabilities: the model computes them only when asked.
            self.settings = self.settings.model_copy(update={"probabilities": True})

    def run(self, ctx: JobContext) -> Iterator[ModelLoaded | ImageStarted | ImageFailed | ImageDone]:
        """Load the model unless cached, then predict image after image; returns the number of images."""
        model = MODELS.get(self.source.key)
        if model is None:
            ctx.report(0, len(self.images), "loading the model", kind="info")
            model = self.source.load()
            MODELS.put(self.source.key, model)
            yield ModelLoaded(self.source.key, ModelRef.of(model))
        ref, n = ModelRef.of(model), len(self.images)
        with self._runner() as runner:
            for k, snap in enumerate(self.images):
                ctx.check()
                yield ImageStarted(snap.name, k, n)
                try:
                    done = self._predict(model, ref, snap, runner, ctx.span(k, k + 1, n))
                except (Cancelled, MemoryError):
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad image must not lose the others
                    yield ImageFailed(snap.name, exc)
                    continue
                yield done
        return n

    def _predict(self, model, ref: ModelRef, snap, runner, ctx: JobContext) -> ImageDone | to_store.StoreDone:
        """One image, in memory or (with ``output``) block by block into its OME-Zarr store."""
        if self.output is not None:
            o = self.output
            return to_store.predict_to_store(model, snap, o.folder, ref, settings=self.settings,
                                             channels=self.channels, block_size=o.block_size, overlap=o.overlap,
                                             runner=runner, model_source=self.source, ctx=ctx)
        from . import tasks

        pred = tasks.predict(model, snap.data, snap.axes, self.settings, ctx, rgb=snap.rgb, channels=self.channels)
        if pred.cancelled:
            raise Cancelled("cancelled by the user")
        return ImageDone(replace(snap, data=None), pred, ref)

    def _runner(self):
        """The Dask cluster's runner for ``output.cluster`` (closed after the batch), else None."""
        if self.output is None or not self.output.cluster:
            return contextlib.nullcontext(None)
        from . import cluster

        return _ClusterRunner(cluster.connect(self.output.cluster))

    def layers(self, done: ImageDone | to_store.StoreDone, existing: Iterable[str] = ()) -> list[tuple]:
        """LayerDataTuples for one finished image, named so that no layer in ``existing`` is replaced."""
        if isinstance(done, to_store.StoreDone):
            prov = provenance(done.model, done.image, self.settings, {"seconds": round(done.seconds, 2)})
            return to_store.store_layers(done, prov, existing)
        prov = provenance(done.model, done.image, self.settings, {"seconds": round(done.prediction.seconds, 2)})
        return prediction_layers(done.prediction, done.image, prov, extras=self.extras, existing=existing)


class _ClusterRunner:
    """A connected cluster as a context manager that gives its runner (and closes what it started)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def __enter__(self):
        return self.cluster.__enter__().runner()

    def __exit__(self, *exc) -> None:
        self.cluster.__exit__(*exc)


@dataclass
class SuggestRequest:
    """Rank the unannotated items of ``images`` by the uncertainty of ``source``'s model (:mod:`.suggest`).

    ``run`` returns the top ``n`` :class:`~napari_dlbio.suggest.Suggestion` (plain data).
    """

    source: ModelSource | None
    images: list[suggest.Source]
    n: int = 5
    settings: Any = None               # the backend's Predict settings (None: its defaults)

    def __post_init__(self) -> None:
        if self.source is None:
            raise ValueError("train a model first, or pick a saved model to rank the slices with")
        if not self.images:
            raise ValueError("choose an image layer to look through")

    def run(self, ctx: JobContext) -> list[suggest.Suggestion]:
        model = MODELS.get(self.source.key)
        if model is None:
            ctx.report(0, 1, "loading the model", kind="info")
            model = self.source.load()
            MODELS.put(self.source.key, model)
        return suggest.suggest(model, self.images, self.n, self.settings, ctx)
