"""Training pairs for supervised restoration: an input image and a target image of the same field.

CARE learns input -> clean (high-SNR) image; Noise2Noise learns input -> a second,
independent noisy acquisition. Both need, per item, a float target of the input's
shape (channels included): :attr:`napari_dlbio.data.Sample.target_image`. Which
training data a model needs is its settings' business
(:meth:`napari_dlbio.config.TrainSettings.needs_targets`); this module only builds
and checks pairs, from arrays (layers) or from two folders matched by file name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .axes import ItemPlan, guess_axes, validate_axes
from .data import Sample, TrainingData, combine, list_images, read_image
from .normalize import as_item, check_dtype, check_shape


def from_pairs(
    image,
    target,
    axes: str | None = None,
    ndim: int = 2,
    name: str = "image",
    target_name: str = "target",
    channels: Sequence[int] | None = None,
    rgb: bool = False,
) -> TrainingData:
    """One sample per item of ``image``, each with the same item of ``target`` (same shape)."""
    shape = tuple(image.shape)
    check_dtype(image.dtype, f"image {name!r}")
    check_dtype(target.dtype, f"target {target_name!r}")
    check_same_shape(shape, tuple(target.shape), name, target_name)
    axes = validate_axes(axes or guess_axes(shape, rgb=rgb), shape)
    check_shape(shape, f"image {name!r}", axes)
    plan = ItemPlan(axes, shape, ndim, tuple(channels) if channels is not None else None)
    samples, used = [], []
    for idx in plan.indices():
        where = f" at {plan.where(idx)}" if idx else ""
        item = as_item(plan.read(image, idx, None), f"image {name!r}{where}")
        goal = as_item(plan.read(target, idx, None), f"target {target_name!r}{where}")
        source = f"{name}{'[' + plan.where(idx) + ']' if idx else ''}"
        samples.append(Sample(item, None, None, source, target_image=goal))
        used.append(dict(zip(plan.loop_axes, map(int, idx))))
    if not samples:
        raise ValueError(f"image {name!r} has no data to train on")
    prov = {
        "sources": [{"image": name, "target": target_name, "axes": axes, "shape": list(shape)}],
        "items": used,
        "n_items": len(samples),
        "n_objects": 0,
    }
    return TrainingData(samples, ndim, prov)


def check_same_shape(shape: tuple, target_shape: tuple, name: str, target_name: str) -> None:
    if tuple(target_shape) != tuple(shape):
        raise ValueError(
            f"target {target_name!r} has shape {tuple(target_shape)} but image {name!r} has {tuple(shape)}: "
            "a target is an image of the same field with the same shape (channels included)")


def check_target_layer(kind: str, name: str) -> None:
    """A target must be an image layer: labels (or points, shapes...) hold no intensities to learn."""
    if kind != "image":
        raise ValueError(
            f"layer {name!r} is a {kind} layer: a restoration target is an image layer (the clean or "
            "second noisy acquisition of the same field), not labels")


def from_folders(
    images: str | Path,
    targets: str | Path,
    axes: str | None = None,
    ndim: int = 2,
    channels: Sequence[int] | None = None,
) -> TrainingData:
    """Pairs matched by file name (``noisy/a.tif`` with ``clean/a.tif``); every input needs its target."""
    image_files = list_images(images)
    target_files = {p.stem: p for p in list_images(targets)}
    missing = [p.name for p in image_files if p.stem not in target_files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} of the {len(image_files)} image(s) in {images} have no target "
                         f"of the same name in {targets}: {shown}")
    parts = []
    for p in image_files:
        t = target_files[p.stem]
        parts.append(from_pairs(read_image(p), read_image(t), axes, ndim, name=str(p), target_name=str(t),
                                channels=channels))
    data = combine(parts)
    data.provenance["folders"] = {"images": str(images), "targets": str(targets)}
    return data


def check_pairs(samples: Sequence[Sample], algorithm: str) -> None:
    """Every sample has a finite target of its image's shape (a model's check before training)."""
    for s in samples:
        if s.target_image is None:
            raise ValueError(f"sample {s.source!r} has no target image; {algorithm} learns from pairs "
                             "(input image, target image)")
        if s.target_image.shape != s.image.shape:
            raise ValueError(f"sample {s.source!r}: target shape {s.target_image.shape} differs from the "
                             f"image's {s.image.shape}")
        if not np.isfinite(s.target_image).all():
            raise ValueError(f"the target of sample {s.source!r} holds NaN or infinite values")
