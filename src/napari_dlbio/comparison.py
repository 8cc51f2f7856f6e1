"""Compare models and label images on the user's own annotations (the Evaluate dock and command).

The *truth* is a labels array of which only the annotated slices/frames count
(the items training would use, :func:`napari_dlbio.data.annotated_items`), or
folders of images and label files matched by name. *Candidates* are models (store
name, model folder, or a backend's pretrained name: loaded by
:func:`napari_dlbio.tasks.load_model`, applied to each item's image by
:func:`napari_dlbio.tasks.predict`) and label images (a layer's array with the
truth's shape, or a folder of label files named like the images).

Input problems are found before anything runs (:func:`check`), as one ValueError.
While running, a model that cannot be loaded or fails on an item is recorded
(the item named) and the other candidates and items still run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import errors as _errors
from .axes import ItemPlan, guess_axes, validate_axes
from .data import annotated_items, list_images, read_image
from .jobs import Cancelled, JobContext
from .metrics import THRESHOLDS, class_iou, match_thresholds
from .scoreboard import CandidateResult, Comparison, ItemScore


@dataclass
class Item:
    """One annotated item: its truth, where it is in the truth's stack, and (files) its image file."""

    name: str
    truth: np.ndarray
    index: tuple[int, ...] = ()
    image_file: Path | None = None


@dataclass
class Truth:
    """The annotated items; ``plan`` cuts the truth's labels stack (None for files).

    ``image`` (with ``image_axes``) is the whole image the labels annotate: each item's
    part is read only when a model needs it, so a lazy (dask/zarr) image stays lazy.
    """

    name: str
    items: list[Item]
    plan: ItemPlan | None = None
    image: Any = None
    image_axes: str | None = None
    rgb: bool = False
    kind: str = "labels"    # "image": clean reference images, restoration scored by PSNR/SSIM

    @property
    def has_images(self) -> bool:
        return self.plan is None or self.image is not None

    def item_image(self, item: Item) -> tuple[np.ndarray, str, bool]:
        """The image of ``item`` (all channels), its axes and whether it is RGB."""
        if item.image_file is not None:
            image = read_image(item.image_file)
            rgb = image.ndim == item.truth.ndim + 1 and image.shape[-1] in (3, 4)
            return image, guess_axes(image.shape, rgb=rgb), rgb
        where = dict(zip(self.plan.loop_axes, item.index))
        sel = tuple(where.get(a, slice(None)) for a in self.image_axes)
        axes = "".join(a for a in self.image_axes if a not in where)
        return np.asarray(self.image[sel]), axes, self.rgb


def truth_from_arrays(labels, image=None, axes: str | None = None, ndim: int = 2, name: str = "labels",
                      rgb: bool = False) -> Truth:
    """The annotated items of ``labels`` (with the shape of ``image`` without C; ``axes`` are the image's)."""
    _check_labels_array(labels, f"truth {name!r}")
    label_shape = tuple(labels.shape)
    if image is not None:
        axes = validate_axes(axes or image_axes(tuple(image.shape), label_shape, rgb), tuple(image.shape))
        expected = ItemPlan(axes, tuple(image.shape), ndim).out_shape()
        if expected != label_shape:
            raise ValueError(f"truth {name!r} has shape {label_shape} but the image needs {expected} "
                             f"(its shape {tuple(image.shape)} without the channel axis)")
    label_axes = axes.replace("C", "") if axes else _label_axes(label_shape)
    plan = ItemPlan(validate_axes(label_axes, label_shape), label_shape, ndim)
    items = [Item(plan.where(idx) or name, target, idx) for idx, target, _, _ in
             annotated_items(labels, plan, name=name)]
    if not items:
        unit = "slice/frame" if plan.loop_axes else "image"
        raise ValueError(f"truth {name!r} holds only 0: nothing is annotated; paint the objects of at least "
                         f"one {unit} to evaluate on it")
    return Truth(name, items, plan, image, axes if image is not None else None, rgb)


def truth_from_reference(clean, image, axes: str | None = None, ndim: int = 2, name: str = "clean") -> Truth:
    """A clean reference image for restoration models: every item of it counts (PSNR/SSIM)."""
    shape = tuple(clean.shape)
    axes = validate_axes(axes or image_axes(tuple(image.shape), shape), tuple(image.shape))
    expected = ItemPlan(axes, tuple(image.shape), ndim).out_shape()
    if expected != shape and expected != (1, *shape):
        raise ValueError(f"clean reference {name!r} has shape {shape} but the image needs {expected}")
    plan = ItemPlan(validate_axes(axes.replace("C", ""), shape), shape, ndim)
    items = [Item(plan.where(idx) or name, np.asarray(plan.read(clean, idx, None)[0]), idx)
             for idx in plan.indices()]
    return Truth(name, items, plan, image, axes, False, kind="image")


def image_axes(shape: tuple[int, ...], label_shape: tuple[int, ...], rgb: bool = False) -> str:
    """The axes of an image annotated by labels of ``label_shape``: the same shape means no channel axis
    (a (3, 512, 512) image with (3, 512, 512) labels is a 3-slice stack, not 3 channels)."""
    if tuple(shape) == tuple(label_shape) and not rgb:
        return _label_axes(tuple(shape))
    return guess_axes(tuple(shape), rgb=rgb)


def _label_axes(shape: tuple[int, ...]) -> str:
    """Guessed axes of labels alone: a small leading axis is a stack (Z, then T), never channels."""
    guess = guess_axes(shape)
    return guess.replace("C", "T" if "Z" in guess else "Z")


def truth_from_folders(images: str | Path, labels: str | Path, reference: bool = False) -> Truth:
    """Images and label files matched by file name; label files holding only 0 are left out.

    ``reference``: ``labels`` holds clean images (restoration, PSNR/SSIM), every one counts.
    """
    label_files = {p.stem: p for p in list_images(labels)}
    items, empty = [], 0
    for p in list_images(images):
        if p.stem not in label_files:
            continue
        truth = read_image(label_files[p.stem])
        if not reference:
            _check_labels_array(truth, f"label file {label_files[p.stem]}")
        if not (reference or truth.any()):
            empty += 1
            continue
        items.append(Item(p.name, truth, (), p))
    if not items:
        why = (f"the {empty} matching label file(s) hold only 0" if empty
               else "no label file matches an image name")
        raise ValueError(f"nothing to evaluate on in {labels}: {why} (images in {images})")
    return Truth(Path(labels).name or str(labels), items, kind="image" if reference else "labels")


def _check_labels_array(arr, what: str) -> None:
    dtype = getattr(arr, "dtype", None)
    if dtype is None or not (np.issubdtype(dtype, np.integer) or dtype == bool):
        raise ValueError(f"{what} holds {dtype} values: it is an image, not labels (integer object ids)")


@dataclass(frozen=True)
class Candidate:
    """A model (``model``: store name, folder or pretrained name of ``backend``) or label images
    (``labels``: an array with the truth's shape; ``folder``: label files named like the images)."""

    name: str
    model: str | None = None
    backend: str | None = None
    labels: Any = None
    folder: str | None = None

    @classmethod
    def of_model(cls, name_or_path: str | Path, backend: str | None = None,
                 name: str | None = None) -> Candidate:
        """The candidate's name: ``name``, else the store name or the folder's name."""
        return cls(name or Path(str(name_or_path)).name or str(name_or_path), str(name_or_path), backend)

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """``BACKEND:NAME`` (a backend's pretrained model, e.g. ``cellpose:cpsam``), else a store name or
        model folder."""
        from . import backends

        backend, sep, name = str(text).partition(":")
        if sep and backend in backends.names() and name:
            return cls.of_model(name, backend, name=f"{backend}:{Path(name).name or name}")
        return cls.of_model(text)

    @classmethod
    def of_labels(cls, name: str, labels) -> Candidate:
        return cls(name, labels=labels)

    @classmethod
    def of_folder(cls, folder: str | Path, name: str | None = None) -> Candidate:
        return cls(name or Path(folder).name, folder=str(folder))

    @property
    def kind(self) -> str:
        return "model" if self.model is not None else "labels"


def check(truth: Truth, candidates: Sequence[Candidate]) -> None:
    """Every input problem found before anything runs, as one ValueError."""
    if not candidates:
        raise ValueError("choose at least one candidate (a model or a labels layer) to evaluate")
    names = [c.name for c in candidates]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two candidates are named {dup[0]!r}; give them different names")
    for c in candidates:
        if c.labels is not None:
            if truth.kind == "labels":
                _check_labels_array(c.labels, f"candidate {c.name!r}")
            if truth.plan is None:
                raise ValueError(f"candidate {c.name!r} is an array: with truths from files, give its "
                                 "label files (a folder)")
            if tuple(c.labels.shape) != truth.plan.shape:
                raise ValueError(f"candidate {c.name!r} has shape {tuple(c.labels.shape)} but the truth "
                                 f"{truth.name!r} has {truth.plan.shape}")
        elif c.folder is not None:
            list_images(c.folder)   # a missing or empty folder: FileNotFoundError naming it
        elif c.model is not None and not truth.has_images:
            raise ValueError(f"model {c.name!r} needs the images: choose the image the labels annotate")


def compare(truth: Truth, candidates: Sequence[Candidate], ctx: JobContext | None = None,
            keep_errors: bool = False) -> Comparison:
    """Score every candidate on every item of ``truth`` (see :func:`iter_compare`)."""
    return Comparison(truth.name, list(iter_compare(truth, candidates, ctx, keep_errors)), truth.kind)


def iter_compare(truth: Truth, candidates: Sequence[Candidate], ctx: JobContext | None = None,
                 keep_errors: bool = False) -> Iterator[CandidateResult]:
    """Each candidate's :class:`CandidateResult` as soon as it is done.

    ``keep_errors``: also its error objects at IoU 0.5 (for a labels layer over the truth).
    """
    ctx = ctx or JobContext()
    check(truth, candidates)
    n = len(candidates)
    for k, c in enumerate(candidates):
        ctx.check()
        yield score_candidate(truth, c, ctx.span(k, k + 1, n), keep_errors)


def score_candidate(truth: Truth, c: Candidate, ctx: JobContext,
                    keep_errors: bool = False) -> CandidateResult:
    """One candidate on every item; a failure to load or on an item is recorded, not raised."""
    result = CandidateResult(c.name, c.kind)
    try:
        predict = _predictor(c, truth, ctx)
    except (Cancelled, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - one candidate that cannot load must not stop the others
        result.error = f"cannot load {c.model!r}: {_describe(exc)}"
        return result
    parts, m = [], len(truth.items)
    for j, item in enumerate(truth.items):
        ctx.check()
        ctx.report(j, m, f"{c.name}: {item.name} ({j + 1}/{m})")
        score, pred = _score_item(truth, c, item, predict, ctx.span(j, j + 1, m))
        result.items.append(score)
        if keep_errors and pred is not None and score.stats:
            parts.append((item.index, _errors.error_objects(item.truth, pred, item=item.name)))
    ctx.report(m, m, f"{c.name}: done")
    if keep_errors and truth.plan is not None:
        result.errors = _errors.combine(parts, truth.plan)
    return result


def _score_item(truth: Truth, c: Candidate, item: Item, predict, ctx: JobContext):
    """The item's score and the candidate's labels for it (None when it failed)."""
    try:
        pred, semantic = predict(truth, item, ctx)
        if tuple(pred.shape) != tuple(item.truth.shape):
            raise ValueError(f"gives shape {tuple(pred.shape)}, the truth has {tuple(item.truth.shape)}")
        if truth.kind == "image":
            return ItemScore(item.name, values=restoration_scores(item.truth, pred)), None
        if semantic:
            n = max(int(item.truth.max()), int(pred.max())) + 1
            mean_iou = float(np.nanmean(class_iou(item.truth, pred, n)))
            return ItemScore(item.name, values={"mean_iou": mean_iou}), None
        return ItemScore(item.name, match_thresholds(item.truth, pred, THRESHOLDS)), pred
    except (Cancelled, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad item must not lose the others
        return ItemScore(item.name, error=f"{item.name}: {_describe(exc)}"), None


def _predictor(c: Candidate, truth: Truth, ctx: JobContext):
    """A function ``(truth, item, ctx) -> (labels, semantic)`` for the candidate."""
    if c.model is None:
        return _stored_labels(c)
    from . import tasks

    ctx.report(0, 1, f"{c.name}: loading the model", kind="info")
    model = tasks.load_model(c.model, c.backend)
    if (model.output == "image") != (truth.kind == "image"):
        raise ValueError(f"{c.name!r} is a {model.backend} model that outputs {model.output}, but the truth "
                         f"holds {'clean images' if truth.kind == 'image' else 'labels'}: compare "
                         + ("restoration models against a clean reference image (PSNR/SSIM)"
                            if model.output == "image" else "segmentation models against labels"))
    out = "image" if model.output == "image" else "labels"

    def predict(truth: Truth, item: Item, ctx: JobContext):
        image, axes, rgb = truth.item_image(item)
        pred = tasks.predict(model, image, axes, None, ctx, rgb=rgb)
        if pred.cancelled:
            raise Cancelled("cancelled by the user")
        result = np.asarray(pred.outputs[out])
        if out == "image" and result.ndim == item.truth.ndim + 1 and result.shape[0] == 1:
            result = result[0]
        return result, bool(model.semantic)

    return predict


def _stored_labels(c: Candidate):
    def from_array(truth: Truth, item: Item, _ctx):
        return truth.plan.read(c.labels, item.index, None)[0], False

    def from_folder(truth: Truth, item: Item, _ctx):
        stem = Path(item.name).stem
        found = [p for p in list_images(c.folder) if p.stem == stem]
        if not found:
            raise FileNotFoundError(f"no label file named {stem}.* in {c.folder}")
        labels = read_image(found[0])
        if truth.kind == "labels":
            _check_labels_array(labels, str(found[0]))
        return labels, False

    return from_array if c.labels is not None else from_folder


def restoration_scores(clean: np.ndarray, result: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of ``result`` against ``clean``, both over the clean image's range."""
    from .metrics import psnr, ssim

    clean = np.asarray(clean, np.float64)
    rng = float(np.ptp(clean)) or 1.0
    return {"PSNR": psnr(clean, result, rng), "SSIM": ssim(clean, result, rng)}


def _describe(exc: BaseException) -> str:
    from .formatting import describe_error

    return describe_error(exc)
