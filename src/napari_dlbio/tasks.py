"""The one job runner: predict and train for every backend.

``predict`` walks the items of an image (T/Z/C handled by :mod:`axes`), calls
the model on each, and writes results back in the input's axis order. ``train``
splits the data, trains, evaluates on the held-out part and saves the model with
its provenance. Neither knows about Qt: progress and cancel travel in a
:class:`~napari_dlbio.jobs.JobContext`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backends, blockwise, store
from .axes import ItemPlan, guess_axes
from .backends import get as get_backend
from .blockstate import STATE_DIR
from .blockwise import BlockOptions, Runner
from .config import PredictSettings, TrainSettings
from .data import Sample, TrainingData
from .jobs import Cancelled, JobContext
from .normalize import as_item, check_dtype, check_shape
from .objects import AGREEMENT, OBJECTS, SHAPES, ObjectTables, Table

OutFactory = Callable[[str, tuple, np.dtype], Any]


@dataclass
class Prediction:
    outputs: dict[str, Any]          # name -> array in the input's axis order
    axes: dict[str, str]             # name -> its axes
    model: str
    seconds: float = 0.0
    cancelled: bool = False
    n_items: int = 0
    objects: Table | None = None  # a row per object (objects.py); None: no scores (images, semantic, blocks)


class ZarrOutputs:
    """Outputs as zarr arrays ``<folder>/<name>.zarr``, for images and stacks larger than memory.

    Chunks hold one item's plane, at most ``chunk`` pixels a side, so each write
    touches only its own chunks. A :class:`~napari_dlbio.blockwise.DiskOutputs`:
    blockwise prediction keeps its progress in ``<folder>/.dlbio``; with ``resume``
    the arrays an interrupted run left are reopened (same shape and type) instead
    of made anew, and without it that progress is forgotten.
    """

    resumable = True

    def __init__(self, folder: str | Path, chunk: int = 512, resume: bool = False) -> None:
        self.path, self.chunk, self.resume = Path(folder), int(chunk), resume
        if not resume:
            shutil.rmtree(self.path / STATE_DIR, ignore_errors=True)

    def array_path(self, name: str) -> str:
        return str(self.path / f"{name}.zarr")

    def __call__(self, name: str, shape: tuple, dtype) -> Any:
        import zarr

        path = self.array_path(name)
        if self.resume and Path(path).exists():
            arr = zarr.open_array(path, mode="r+")
            if tuple(arr.shape) != tuple(shape) or arr.dtype != np.dtype(dtype):
                raise ValueError(f"cannot resume into {path}: it holds {arr.shape} {arr.dtype}, this run "
                                 f"writes {tuple(shape)} {np.dtype(dtype)}; rerun without resume")
            return arr
        chunks = tuple(1 for _ in shape[:-2]) + tuple(min(self.chunk, s) for s in shape[-2:])
        return zarr.open_array(path, mode="w", shape=shape, chunks=chunks, dtype=dtype)


def zarr_outputs(folder: str | Path, chunk: int = 512, resume: bool = False) -> ZarrOutputs:
    """Outputs as zarr arrays on disk (see :class:`ZarrOutputs`)."""
    return ZarrOutputs(folder, chunk, resume)


def load_model(name_or_path: str | Path, backend: str | None = None):
    """A model from the store (name or folder) or, with ``backend``, a pretrained name/file.

    Our own models come first, so every backend finds store names the same way;
    anything else is the backend's to resolve (official names, foreign files).
    """
    if backend is not None and _store_folder(name_or_path) is None:
        return get_backend(backend).pretrained(str(name_or_path))
    if _foreign_package(name_or_path):
        from .bioimageio_import import open_foreign

        exporters = [backends.get(n).Model for n in backends.available() if backends.spec(n).bioimageio]
        return open_foreign(name_or_path, exporters)
    info = store.read_info(store.resolve(name_or_path))
    if backend is not None and info.backend != backend:
        raise store.ModelError(f"{info.name} is a {info.backend} model, not {backend}")
    return get_backend(info.backend).load(info)


def _foreign_package(name_or_path: str | Path) -> bool:
    """A bioimage.io zip made elsewhere (no model.json of ours): a backend must run it."""
    from . import bioimageio_import as bmz

    p = Path(name_or_path).expanduser()
    return p.suffix.lower() == ".zip" and bmz.is_package(p) and not bmz.is_ours(p)


def _store_folder(name_or_path: str | Path) -> Path | None:
    """The folder of a napari-dlbio model named or at ``name_or_path``, else None."""
    try:
        folder = store.resolve(name_or_path)
    except store.ModelError:
        return None
    return folder if (folder / store.META_FILE).is_file() else None


def model_name(model) -> str:
    return model.display_name


def predict(
    model,
    image,
    axes: str | None = None,
    settings: PredictSettings | None = None,
    ctx: JobContext | None = None,
    rgb: bool = False,
    channels: tuple[int, ...] | None = None,
    out: OutFactory | None = None,
    unique_labels: bool = True,
    *,
    block_size: int | tuple[int, ...] | None = None,
    overlap: int | tuple[int, ...] | None = None,
    memory_limit: int | None = None,
    runner: Runner | None = None,
    resume: bool = False,
    model_source: Any = None,
    image_source: Any = None,
) -> Prediction:
    """Apply ``model`` to every item of ``image`` (numpy, dask or zarr).

    Items are read one at a time, so a dask/zarr stack larger than memory works
    when ``out`` allocates outputs on disk (e.g. ``zarr.open``). Labels of separate
    items are offset so every object of the stack has its own id. On cancel the
    items done so far are returned with ``cancelled=True``.

    An item larger than a block (``block_size`` pixels a side, else sized from
    ``memory_limit`` bytes, default 1 GiB) is predicted block by block
    (:mod:`napari_dlbio.blockwise`) when ``out`` is given or ``block_size`` is: each
    block with ``overlap`` pixels of context (default: the model's), the blocks run by
    ``runner`` (default: one after the other here); instance labels are stitched
    across blocks (uint32, uint64 for images of more than 2**32 - 1 pixels) and
    vector outputs (polygons) are not made. With ``resume`` a run cut short in the
    same ``out`` continues. ``model_source``/``image_source`` (a
    :class:`~napari_dlbio.requests.ModelSource`, an ``ngff.ImageSource``) are what block
    tasks carry instead of ``model``/``image`` to a runner in other processes.
    """
    ctx = ctx or JobContext()
    settings = model.coerce_predict(settings)
    plan = _item_plan(model, image, axes, settings, rgb, channels)
    blocks = BlockOptions(block_size, overlap, memory_limit, runner, resume, model_source, image_source)
    if blockwise.wanted(model, plan, settings, out, blocks):
        return _predict_blockwise(model, image, plan, settings, ctx, out, unique_labels, blocks)
    return _predict_items(model, image, plan, settings, ctx, out, unique_labels)


def first_item(model, image, axes: str | None = None, rgb: bool = False, channels=None) -> np.ndarray:
    """The first item (C, *spatial) of ``image`` as ``model`` would read it, as float32."""
    plan = _item_plan(model, image, axes, model.coerce_predict(None), rgb, channels)
    return as_item(plan.read(image, next(iter(plan.indices())), None), "example image")


def _item_plan(model, image, axes, settings, rgb: bool, channels) -> ItemPlan:
    """How ``image`` is cut into items for ``model``; a clear error for what cannot work."""
    check_dtype(image.dtype, "image")
    axes = axes or guess_axes(image.shape, rgb=rgb)
    plan = ItemPlan(axes, tuple(image.shape), model.item_ndim(settings), channels)
    check_shape(image.shape, "image", plan.axes)
    if not model.accepts_channels(plan.n_channels):
        raise ValueError(
            f"model {model_name(model)!r} expects {model.n_channels} channel(s) but the image "
            f"gives {plan.n_channels} (axes {plan.axes}, shape {plan.shape}); choose the channels "
            "to use or set the axes"
        )
    return plan


def _predict_items(model, image, plan: ItemPlan, settings, ctx: JobContext, out, unique_labels: bool) -> Prediction:
    """Item after item, each whole."""
    writer = _Writer(plan, out or (lambda name, shape, dtype: np.zeros(shape, dtype)), unique_labels)
    start = time.monotonic()
    n, done, cancelled = plan.n_items, 0, False
    for k, idx in enumerate(plan.indices()):
        try:
            ctx.check()
            where = plan.where(idx)
            item = as_item(plan.read(image, idx, None), "image" + (f" at {where}" if where else ""))
            res = model.predict(item, settings, ctx.span(k, k + 1, n))
        except Cancelled:
            cancelled = True
            break
        writer.write(idx, res)
        done = k + 1
        ctx.report(done, n, f"{done}/{n} {'slices' if n > 1 else 'image'}")
    return Prediction(writer.outputs, writer.axes, model_name(model), time.monotonic() - start, cancelled, done,
                      writer.objects.table() if writer.objects else None)


def _predict_blockwise(model, image, plan, settings, ctx, out, unique_labels, blocks) -> Prediction:
    start = time.monotonic()
    res = blockwise.predict_blockwise(model, image, plan, settings, ctx, out, unique_labels, blocks)
    return Prediction(res.outputs, res.axes, model_name(model), time.monotonic() - start, res.cancelled,
                      res.n_items)


class _Writer:
    """Writes each item's named outputs into the stack's outputs (in the input's axis order)."""

    def __init__(self, plan: ItemPlan, out: OutFactory, unique_labels: bool) -> None:
        self.plan, self.out, self.unique = plan, out, unique_labels and plan.n_items > 1
        self.outputs: dict[str, Any] = {}
        self.axes: dict[str, str] = {}
        self.offset = 0
        self.objects: ObjectTables | None = None

    def write(self, idx: tuple[int, ...], res: dict[str, Any]) -> None:
        plan, offset = self.plan, self.offset
        for name, arr in res.items():
            if name in (OBJECTS, AGREEMENT):
                continue
            if name == SHAPES:
                # Vector extras (polygons) in item coordinates -> the output's coordinates.
                self.outputs.setdefault(SHAPES, []).extend(_place_shapes(arr, plan, idx))
                self.axes[SHAPES] = plan.out_axes()
                continue
            chan = arr.ndim == plan.ndim + 1
            if chan and arr.shape[0] == 1 and "C" not in plan.axes:
                # A single-channel result of a single-channel image keeps the image's shape.
                arr, chan = arr[0], False
            if name not in self.outputs:
                self.outputs[name] = self.out(name, plan.out_shape(arr.shape[0] if chan else None), arr.dtype)
                self.axes[name] = plan.out_axes(chan)
            if name == "labels" and self.unique:
                # Every object of the stack gets its own id.
                arr = np.where(arr > 0, arr + self.offset, 0).astype(arr.dtype)
                self.offset = max(self.offset, int(arr.max()))
            plan.write(self.outputs[name], idx, arr, channels=chan)
        if OBJECTS in res:  # measured on the labels as written (offset): rows name the output's ids
            self.objects = self.objects or ObjectTables(plan.spatial_axes, plan.out_axes())
            lab = np.where(res["labels"] > 0, res["labels"] + offset, 0)  # offset: 0 unless ids made unique
            self.objects.add(dict(zip(plan.loop_axes, idx)), lab, res[OBJECTS], offset, res.get(AGREEMENT))


def _place_shapes(shapes, plan: ItemPlan, idx: tuple[int, ...]) -> list[np.ndarray]:
    """Vertices in item (spatial) coordinates -> coordinates over the output's axes.

    Loop axes (T, and Z for 2D models) get the item's index, so each polygon lands on
    its own frame/slice of a napari Shapes layer with the labels' axes.
    """
    where = dict(zip(plan.loop_axes, idx))
    out = []
    for v in shapes:
        v = np.asarray(v, dtype=np.float32)
        cols = [np.full(len(v), where[a], np.float32) if a in where else v[:, plan.spatial_axes.index(a)]
                for a in plan.out_axes()]
        out.append(np.stack(cols, axis=1))
    return out


@dataclass
class TrainOutcome:
    model: Any
    path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    fit: Any = None


def train(
    backend: str,
    data: TrainingData,
    settings: TrainSettings,
    save_to: str | Path | None,
    ctx: JobContext | None = None,
    start_from: str | Path | Any | None = None,
) -> TrainOutcome:
    """Train a new model (or fine-tune ``start_from``), evaluate it, save it.

    The time budget (``settings.minutes``, or the deadline the context carries)
    covers the whole job: preparation, training, tuning, evaluation and saving. A
    cancel before any epoch finished raises :class:`Cancelled` and saves nothing; a
    later cancel keeps and saves the best weights so far (marked in model.json).
    """
    ctx = ctx or JobContext()
    ctx.budget(settings.minutes)
    model = _start_model(backend, data, settings, start_from)
    train_s, val_s = data.split(settings.val_fraction, settings.seed)
    parent = model.info
    try:
        fit = model.train(train_s, val_s, settings, ctx)
        if fit.best_epoch < 1:
            raise Cancelled("training was cancelled before the first epoch ended; no model was saved")
        ctx.report(1, 1, "evaluating on validation data", kind="info")
        # Not cancellable: a cancelled training still saves its best epoch with its metrics.
        metrics = evaluate(model, val_s, JobContext(), fit.raw_val) if val_s else {}
    finally:
        model.release()
    metrics.update(fit.metrics)
    metrics["training"] = fit.summary()
    prov = _provenance(data, train_s, val_s, parent, start_from)
    path = _save(model, backend, prov, metrics, fit, save_to) if save_to is not None else None
    return TrainOutcome(model, path, metrics, fit)


def _start_model(backend: str, data: TrainingData, settings: TrainSettings, start_from):
    """The model to train: loaded (fine-tuning), given, or new; checked against the data."""
    if isinstance(start_from, (str, Path)):
        model = load_model(start_from, backend)
    elif start_from is not None:
        model = start_from
    else:
        model = get_backend(backend).new(settings, data.n_channels, data.ndim)
    if not model.accepts_channels(data.n_channels):
        raise ValueError(
            f"the model takes {model.n_channels} channel(s), the training images have {data.n_channels}")
    if data.ndim != model.ndim:
        raise ValueError(f"the model is {model.ndim}D, the training data is {data.ndim}D")
    return model


def _provenance(data: TrainingData, train_s, val_s, parent, start_from) -> dict[str, Any]:
    prov = dict(data.provenance)
    prov["n_train"], prov["n_val"] = len(train_s), len(val_s)
    prov["val_items"] = [s.source for s in val_s]
    if parent is not None:
        prov["fine_tuned_from"] = {"name": parent.name, "path": str(parent.path), "created": parent.created}
    elif isinstance(start_from, str):
        prov["fine_tuned_from"] = {"name": start_from}
    return prov


def _save(model, backend: str, prov: dict, metrics: dict, fit, save_to) -> Path:
    info = store.ModelInfo(
        path=Path("."),
        name=str(save_to),
        backend=backend,
        settings=model.settings.model_dump(mode="json"),
        ndim=model.ndim,
        n_channels=model.n_channels,
        normalization=model.normalization(),
        provenance=prov,
        metrics=metrics,
        history=fit.history,
        versions=store.package_versions(tuple(model.spec.requires)),
    )
    path = store.save(info, model.save_weights, save_to)
    model.info = store.read_info(path)
    return path


def evaluate(model, samples: list[Sample], ctx: JobContext | None = None, raw=None) -> dict[str, Any]:
    """Validation metrics: AP@0.5/F1 for instances, IoU per class for semantic, PSNR for images."""
    return model.evaluate(samples, ctx or JobContext(), raw)
