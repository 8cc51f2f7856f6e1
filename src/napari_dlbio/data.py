"""Training data: image/label pairs from layers or folders.

Only the annotated part is used: an item (a 2D slice/frame, or a 3D volume for
3D models) counts as annotated when its labels hold any non-zero value. With
``scribbles`` the value 0 means "not annotated" (the loss ignores it) instead of
background; a ``region`` mask (e.g. from a shapes layer) restricts both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .axes import ItemPlan, guess_axes, validate_axes
from .normalize import as_item, check_dtype, check_shape

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass
class Sample:
    image: np.ndarray                  # (C, *spatial) float32, raw intensities
    target: np.ndarray | None = None   # (*spatial) int32 labels; None when self-supervised
    mask: np.ndarray | None = None     # (*spatial) bool: where target is valid
    source: str = ""
    # (C, *spatial) float32, raw intensities: the image a restoration model learns to
    # produce from ``image`` (CARE: a clean image; Noise2Noise: a second noisy one); see pairs.py
    target_image: np.ndarray | None = None


@dataclass
class TrainingData:
    samples: list[Sample]
    ndim: int = 2
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return self.samples[0].image.shape[0] if self.samples else 1

    def __len__(self) -> int:
        return len(self.samples)

    def split(self, val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
        """Hold out whole samples; with one sample, hold out a strip of it instead."""
        if val_fraction <= 0 or not self.samples:
            return list(self.samples), []
        if len(self.samples) == 1:
            return _split_one(self.samples[0], val_fraction)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.samples))
        n_val = max(1, int(round(val_fraction * len(self.samples))))
        n_val = min(n_val, len(self.samples) - 1)
        val = [self.samples[i] for i in sorted(order[:n_val])]
        train = [self.samples[i] for i in sorted(order[n_val:])]
        return train, val


def _split_one(s: Sample, val_fraction: float) -> tuple[list[Sample], list[Sample]]:
    # One annotated image: keep the last rows (along Y) for validation.
    ny = s.image.shape[-2]
    cut = int(round(ny * (1 - val_fraction)))
    if cut < 32 or ny - cut < 32:
        return [s], []

    def part(sl: slice) -> Sample:
        return Sample(
            s.image[..., sl, :],
            None if s.target is None else s.target[..., sl, :],
            None if s.mask is None else s.mask[..., sl, :],
            f"{s.source}[rows {sl.start or 0}:{sl.stop or ny}]",
            None if s.target_image is None else s.target_image[..., sl, :],
        )

    return [part(slice(0, cut))], [part(slice(cut, None))]


def _count_objects(target: np.ndarray) -> int:
    return int(len(np.unique(target)) - (1 if (target == 0).any() else 0))


def from_arrays(
    image,
    labels=None,
    axes: str | None = None,
    ndim: int = 2,
    name: str = "image",
    labels_name: str = "labels",
    region: np.ndarray | None = None,
    scribbles: bool = False,
    channels: Sequence[int] | None = None,
    rgb: bool = False,
) -> TrainingData:
    """Pairs from one image array and its labels (same shape without C).

    ``labels=None`` gives self-supervised samples (every item is used).
    """
    shape = tuple(image.shape)
    check_dtype(image.dtype, f"image {name!r}")
    axes = validate_axes(axes or guess_axes(shape, rgb=rgb), shape)
    plan = ItemPlan(axes, shape, ndim, tuple(channels) if channels is not None else None)
    check_shape(shape, f"image {name!r}", axes)
    if labels is not None:
        _check_labels(labels, plan, shape, name, labels_name)
    if labels is not None:
        label_plan = ItemPlan(plan.out_axes(), plan.out_shape(), ndim)
        items = annotated_items(labels, label_plan, region, scribbles, labels_name)
    else:
        items = ((idx, None, None, 0) for idx in plan.indices())
    samples, used = [], []
    n_objects = 0
    for idx, target, mask, count in items:
        n_objects += count
        where = f" at {plan.where(idx)}" if idx else ""
        item = as_item(plan.read(image, idx, None), f"image {name!r}{where}")
        samples.append(Sample(item, target, mask, f"{name}{'[' + plan.where(idx) + ']' if idx else ''}"))
        used.append(dict(zip(plan.loop_axes, map(int, idx))))
    if not samples:
        raise ValueError(
            f"no annotated slice in labels {labels_name!r}: {_considered(plan, name)} "
            f"{'and the region ' if region is not None else ''}hold only 0, so nothing is annotated; "
            "paint at least one object (any non-zero label) in a slice/frame to train on it"
            if labels is not None
            else f"image {name!r} has no data to train on"
        )
    prov = {
        "sources": [{"image": name, "labels": labels_name if labels is not None else None, "axes": axes,
                     "shape": list(shape)}],
        "items": used,
        "n_items": len(samples),
        "n_objects": n_objects,
        "scribbles": scribbles,
        "region": region is not None,
    }
    return TrainingData(samples, ndim, prov)


def _check_labels(labels, plan: ItemPlan, shape: tuple, name: str, labels_name: str) -> None:
    """Labels must have the image's shape without C, and hold integers."""
    expected = plan.out_shape()
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels {labels_name!r} have shape {tuple(labels.shape)} but image {name!r} "
            f"needs {expected} (its shape {shape} without the channel axis)"
        )
    ldtype = getattr(labels, "dtype", None)  # any array-like (numpy, dask, zarr, lists)
    if ldtype is None:
        ldtype = np.asarray(labels[(0,) * labels.ndim]).dtype
    if not np.issubdtype(ldtype, np.integer):
        raise ValueError(f"labels {labels_name!r} must hold integers, not {ldtype}")


def _considered(plan: ItemPlan, name: str) -> str:
    """Which items were looked at: ``the 4 slice(s) z=0..3 of image 'a'``."""
    if not plan.loop_axes:
        return f"the labels of image {name!r}"
    ranges = ", ".join(f"{a.lower()}=0..{n - 1}" if n else f"{a.lower()} (empty)"
                       for a, n in zip(plan.loop_axes, plan.loop_shape))
    return f"the {plan.n_items} slice(s) ({ranges}) of image {name!r}"


INT32 = np.iinfo(np.int32)


def annotated_items(labels, plan: ItemPlan, region: np.ndarray | None = None, scribbles: bool = False,
                    name: str = "labels"):
    """The one definition of "annotated": yields ``(index, target, mask, n_objects)`` per item.

    An item counts when its labels hold a non-zero value (inside ``region``, if
    given). ``mask`` marks where the target is valid (scribbles and/or region).
    """
    for idx in plan.indices():
        raw = plan.read(labels, idx, None)[0]
        if raw.size:
            lo, hi = int(raw.min()), int(raw.max())
            where = f" at {plan.where(idx)}" if idx else ""
            if lo < 0:
                raise ValueError(f"labels {name!r}{where} hold negative values (down to {lo}); "
                                 "label ids must be 0 (background) or positive")
            if hi > INT32.max:
                raise ValueError(f"labels {name!r}{where} hold ids up to {hi}, beyond int32 "
                                 f"(at most {INT32.max}); relabel them (e.g. skimage.segmentation.relabel_sequential)")
        target = raw.astype(np.int32)
        if not target.any():
            continue
        mask = target > 0 if scribbles else None
        if region is not None:
            reg = _region_item(region, plan, idx, target.shape)
            mask = reg if mask is None else mask & reg
            if not (target[reg] > 0).any():
                continue
        yield idx, target, mask, _count_objects(target if mask is None else np.where(mask, target, 0))


def _region_item(region: np.ndarray, plan: ItemPlan, idx: tuple[int, ...], shape) -> np.ndarray:
    # A region drawn on one 2D plane applies to every slice/frame of the stack.
    if region.ndim == len(plan.shape):
        return plan.read(region, idx, np.int64)[0] > 0
    return np.broadcast_to(np.asarray(region) > 0, shape)


def combine(parts: Sequence[TrainingData]) -> TrainingData:
    """Several layers' or files' data as one set, provenance merged."""
    parts = [p for p in parts if p.samples]
    if not parts:
        raise ValueError("no training data")
    nd = {p.ndim for p in parts}
    nc = {p.n_channels for p in parts}
    if len(nd) > 1 or len(nc) > 1:
        raise ValueError(f"training images disagree in dimensionality {sorted(nd)} or channels {sorted(nc)}")
    prov: dict[str, Any] = {"sources": [], "items": [], "n_items": 0, "n_objects": 0}
    for p in parts:
        for k in ("sources", "items"):
            prov[k] += p.provenance.get(k, [])
        for k in ("n_items", "n_objects"):
            prov[k] += p.provenance.get(k, 0)
        for k in ("scribbles", "region"):
            prov[k] = prov.get(k, False) or p.provenance.get(k, False)
    return TrainingData([s for p in parts for s in p.samples], nd.pop(), prov)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder or file: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    import skimage.io

    return skimage.io.imread(path)


def from_folders(
    images: str | Path,
    labels: str | Path | None = None,
    axes: str | None = None,
    ndim: int = 2,
    channels: Sequence[int] | None = None,
) -> TrainingData:
    """Pairs matched by file name (``train/images/a.tif`` with ``train/masks/a.tif``)."""
    image_files = list_images(images)
    label_files: dict[str, Path] = {}
    if labels is not None:
        label_files = {p.stem: p for p in list_images(labels)}
        missing = [p.name for p in image_files if p.stem not in label_files]
        if len(missing) == len(image_files):
            raise ValueError(f"no label file in {labels} matches an image name in {images}")
    parts, empty = [], []
    for p in image_files:
        if labels is not None and p.stem not in label_files:
            continue
        img = read_image(p)
        lab = read_image(label_files[p.stem]) if labels is not None else None
        if lab is not None and img.ndim == lab.ndim + 1 and img.shape[-1] in (3, 4) and axes is None:
            ax = guess_axes(img.shape, rgb=True)
        else:
            ax = axes
        try:
            parts.append(from_arrays(img, lab, ax, ndim, name=str(p), labels_name=str(label_files.get(p.stem, ""))))
        except ValueError as exc:
            if "no annotated" in str(exc):
                empty.append(label_files[p.stem].name)
                continue
            raise
    if not parts and empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise ValueError(
            f"no training data: the {len(empty)} label file(s) considered in {labels} ({shown}) hold only 0 "
            "in every slice, so nothing is annotated; paint at least one object (any non-zero label)")
    data = combine(parts)
    data.provenance["folders"] = {"images": str(images), "labels": str(labels) if labels else None}
    return data
