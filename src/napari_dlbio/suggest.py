"""What to annotate next: unannotated items (and tiles of large images) ranked by the model's uncertainty.

The measure is **test-time disagreement**: each item is predicted as it is and
flipped/rotated (:func:`transforms`), every prediction is mapped back, and the
predictions are compared with each other.

- Labels models (instance or semantic): the objects of the plain prediction are
  matched to those of each transformed one (IoU, :func:`napari_dlbio.objects.best_iou`),
  in both directions, and ``uncertainty = 1 - mean best IoU`` over all objects
  and transforms. An object that the model finds the same way however the image
  is turned scores 0; one that appears, vanishes, splits or changes shape when
  it is turned scores up to 1. Objects that do not reproduce are where the model
  is unsure, and where a correction teaches it most.
- Image (restoration) models: the variance across transforms, per pixel, over
  the variance of the mean output (a normalised variance: 0 when every transform
  gives the same image, independent of the intensity scale).

Why this measure: it needs nothing but :meth:`~napari_dlbio.backends.base.ModelBase.predict`,
so it works for every backend the same way (no backend's own probability or
score, whose meaning differs between U-Net, StarDist and Cellpose), and it
catches the two failures that matter for what to annotate: images unlike the
training data (the network's output is then unstable) and hard objects (touching,
faint) whose outlines the model does not pin down. An item on which the model
finds no object in any transform scores 0.

"Unannotated" is training's rule (:func:`napari_dlbio.data.annotated_items`): an
item whose labels hold only 0 (inside the region, if given). Items larger than
``tile_above`` pixels a side (2D) are ranked tile by tile (``tile`` pixels a
side), and a tile holding any non-zero label counts as annotated on its own
(training takes the whole item once any of it is painted: draw a region around
the annotated tiles so that it uses only those).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .axes import ItemPlan, guess_axes, validate_axes
from .data import annotated_items, list_images, read_image
from .jobs import JobContext
from .objects import best_iou
from .normalize import as_item, check_dtype

TILE = 512          # pixels a side of the tiles of a large item
TILE_ABOVE = 1024   # items larger than this (either side) are ranked tile by tile
Box = tuple[int, int, int, int]  # (y0, x0, y1, x1) in the item's pixels, end exclusive


@dataclass
class Source:
    """One image to look through: an array (numpy/dask/zarr), its axes and (optionally) its labels.

    ``labels`` has the image's shape without C; items (and tiles) annotated there are skipped.
    """

    name: str
    data: Any
    axes: str | None = None        # None: guessed from the shape
    labels: Any = None
    rgb: bool = False
    channels: tuple[int, ...] | None = None
    region: np.ndarray | None = None   # as in training: only annotations inside it count


@dataclass(frozen=True)
class Suggestion:
    """An item (or a tile of one) worth annotating next."""

    image: str                     # the Source's name (layer or file)
    index: tuple[int, ...]         # the item over ``loop_axes`` (() for a single 2D/3D image)
    loop_axes: str                 # e.g. "Z", "T", "TZ" or ""
    where: str                     # the item as people read it: "z=3" ("" for a single image)
    box: Box | None                # the tile, or None for the whole item
    score: float                   # the uncertainty, 0 = certain (see the module docstring)
    n_objects: int                 # objects in the plain prediction

    def label(self) -> str:
        """``"cells z=3 tile y=0:512 x=512:1024"``: what the Train dock and the CLI show."""
        parts = [self.image] + ([self.where] if self.where else [])
        if self.box is not None:
            y0, x0, y1, x1 = self.box
            parts.append(f"tile y={y0}:{y1} x={x0}:{x1}")
        return " ".join(parts)


# --- transforms ------------------------------------------------------------------------------
Transform = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def transforms(ndim: int) -> list[Transform]:
    """(forward, inverse) pairs over the last ``ndim`` axes; the identity first.

    2D: identity, the two flips and a 90° rotation (the moves a microscope image
    has no preferred direction for; the network is not invariant to them). 3D:
    identity and a flip of each axis (Z is often sampled differently, so no rotation).
    """
    ident = (lambda a: a, lambda a: a)
    flips = [(lambda a, d=d: np.flip(a, d), lambda a, d=d: np.flip(a, d)) for d in range(-ndim, 0)]
    if ndim == 3:
        return [ident, *flips]
    rot = (lambda a: np.rot90(a, 1, (-2, -1)), lambda a: np.rot90(a, -1, (-2, -1)))
    return [ident, *flips, rot]


def object_disagreement(preds: Sequence[np.ndarray]) -> tuple[float, int]:
    """``1 - mean best IoU`` of the objects of ``preds[0]`` and each other prediction, both ways.

    Returns (uncertainty in [0, 1], objects in ``preds[0]``); 0 when no prediction holds an object.
    """
    ref = np.asarray(preds[0])
    best: list[np.ndarray] = []
    for other in map(np.asarray, preds[1:]):
        best.append(_present(best_iou(ref, other), ref))
        best.append(_present(best_iou(other, ref), other))
    n_ref = int(len(np.unique(ref)) - (1 if (ref == 0).any() else 0))
    scores = np.concatenate(best) if best else np.zeros(0)
    return (float(1.0 - scores.mean()) if scores.size else 0.0), n_ref


def _present(per_id: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The values of ``per_id`` (indexed by label id) for the objects ``labels`` holds."""
    ids = np.unique(labels)
    return per_id[ids[ids != 0]]


def image_disagreement(preds: Sequence[np.ndarray]) -> float:
    """Mean variance across ``preds`` over the variance of their mean image (0 = all the same)."""
    stack = np.stack([np.asarray(p, np.float64) for p in preds])
    spread = float(stack.var(0).mean())
    return spread / (float(stack.mean(0).var()) + 1e-12)


def item_uncertainty(model, item: np.ndarray, settings=None, ctx: JobContext | None = None
                     ) -> tuple[float, int]:
    """(uncertainty, number of objects) of one item ``(C, *spatial)`` under ``model``."""
    ctx = ctx or JobContext()
    settings = model.coerce_predict(settings)
    ndim = item.ndim - 1
    key = "image" if model.output == "image" else "labels"
    moves = transforms(ndim)
    preds = []
    for k, (fwd, inv) in enumerate(moves):
        ctx.check()
        out = model.predict(np.ascontiguousarray(fwd(item)), settings, ctx.span(k, k + 1, len(moves)))
        preds.append(np.ascontiguousarray(inv(np.asarray(out[key]))))
    if key == "image":
        return image_disagreement(preds), 0
    return object_disagreement(preds)


# --- what to look at -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Unit:
    source: int
    index: tuple[int, ...]
    box: Box | None


def tiles(shape: Sequence[int], tile: int = TILE, tile_above: int = TILE_ABOVE) -> list[Box | None]:
    """Tiles of a 2D item ``(Y, X)`` larger than ``tile_above`` a side, else ``[None]`` (the whole item).

    The tiles cover the item; the last one in a row/column is moved back inside it
    (so it overlaps its neighbour) rather than cut short.
    """
    if len(shape) != 2 or max(shape) <= tile_above:
        return [None]
    starts = [sorted({min(k * tile, max(s - tile, 0)) for k in range(-(-s // tile))}) for s in shape]
    return [(y, x, min(y + tile, shape[0]), min(x + tile, shape[1])) for y in starts[0] for x in starts[1]]


def _plan(model, src: Source, settings) -> ItemPlan:
    check_dtype(src.data.dtype, f"image {src.name!r}")
    axes = validate_axes((src.axes or "").upper() or guess_axes(src.data.shape, rgb=src.rgb), src.data.shape)
    plan = ItemPlan(axes, tuple(src.data.shape), model.item_ndim(settings), src.channels)
    if not model.accepts_channels(plan.n_channels):
        raise ValueError(f"image {src.name!r} gives {plan.n_channels} channel(s) (axes {axes}); "
                         f"the model takes {model.n_channels}")
    return plan


def _annotated(src: Source, plan: ItemPlan) -> set[tuple[int, ...]]:
    if src.labels is None:
        return set()
    if tuple(src.labels.shape) != plan.out_shape():
        raise ValueError(f"labels of {src.name!r} have shape {tuple(src.labels.shape)}, the image needs "
                         f"{plan.out_shape()} (its shape without the channel axis)")
    label_plan = ItemPlan(plan.out_axes(), plan.out_shape(), plan.ndim)
    return {tuple(idx) for idx, *_ in annotated_items(src.labels, label_plan, src.region, name=src.name)}


def _tile_annotated(src: Source, plan: ItemPlan, idx, box: Box) -> bool:
    label_plan = ItemPlan(plan.out_axes(), plan.out_shape(), plan.ndim)
    region = (slice(box[0], box[2]), slice(box[1], box[3]))
    return bool(np.any(label_plan.read(src.labels, idx, None, region)))


def units(model, sources: Sequence[Source], settings=None, tile: int = TILE, tile_above: int = TILE_ABOVE
          ) -> tuple[list[_Unit], list[ItemPlan]]:
    """Every unannotated item (or tile) of ``sources``, and each source's item plan."""
    settings = model.coerce_predict(settings)
    out, plans = [], []
    for s, src in enumerate(sources):
        plan = _plan(model, src, settings)
        plans.append(plan)
        done = _annotated(src, plan)
        boxes = tiles(plan.spatial_shape, tile, tile_above)
        for idx in plan.indices():
            idx = tuple(int(i) for i in idx)
            for box in boxes:
                # A large image is annotated tile by tile: a tile counts on its own.
                taken = idx in done if box is None else (src.labels is not None and
                                                         _tile_annotated(src, plan, idx, box))
                if not taken:
                    out.append(_Unit(s, idx, box))
    return out, plans


# --- the ranking ------------------------------------------------------------------------------------
def suggest(model, sources: Sequence[Source], n: int | None = None, settings=None,
            ctx: JobContext | None = None, tile: int = TILE, tile_above: int = TILE_ABOVE
            ) -> list[Suggestion]:
    """The unannotated items/tiles of ``sources``, most uncertain first (the top ``n``; None: all).

    Raises :class:`~napari_dlbio.jobs.Cancelled` when ``ctx`` is cancelled.
    """
    ctx = ctx or JobContext()
    settings = model.coerce_predict(settings)
    todo, plans = units(model, sources, settings, tile, tile_above)
    found = []
    for k, u in enumerate(todo):
        ctx.check()
        src, plan = sources[u.source], plans[u.source]
        where = plan.where(u.index)
        region = None if u.box is None else (slice(u.box[0], u.box[2]), slice(u.box[1], u.box[3]))
        item = as_item(plan.read(src.data, u.index, None, region), f"image {src.name!r} {where}".strip())
        score, n_obj = item_uncertainty(model, item, settings, ctx.span(k, k + 1, len(todo)))
        found.append(Suggestion(src.name, u.index, plan.loop_axes, where, u.box, score, n_obj))
        ctx.report(k + 1, len(todo), f"{k + 1}/{len(todo)} unannotated items")
    found.sort(key=lambda s: -s.score)
    return found if n is None else found[:n]


def folder_sources(images: str | Path, labels: str | Path | None = None, axes: str | None = None,
                   channels: tuple[int, ...] | None = None) -> list[Source]:
    """Every image of a folder (or one file); ``labels``: a folder of label images matched by name."""
    files = list_images(images)
    by_stem = {p.stem: p for p in list_images(labels)} if labels is not None else {}
    out = []
    for f in files:
        lab = by_stem.get(f.stem)
        out.append(Source(f.name, read_image(f), axes, read_image(lab) if lab is not None else None,
                          channels=channels))
    return out


def iter_rows(found: Sequence[Suggestion]) -> Iterator[dict[str, Any]]:
    """One plain row per suggestion (for a CSV or a table)."""
    for rank, s in enumerate(found, 1):
        box = "" if s.box is None else "{}:{},{}:{}".format(s.box[0], s.box[2], s.box[1], s.box[3])
        yield {"rank": rank, "image": s.image, "item": s.where, "tile": box,
               "uncertainty": round(s.score, 4), "objects": s.n_objects}


def focus(s: Suggestion, axes: str, shape: Sequence[int]) -> tuple[list[float], list[float]]:
    """Where ``s`` lies in an array with ``axes``/``shape``: its centre and extent per axis (data pixels).

    Loop axes (T, Z of a 2D model) give the item's index and extent 0, spatial axes
    the tile's (or the whole item's) centre and size, C 0 and 0. A dock turns these
    into the viewer's world coordinates (the layer's scale and translate) to go there.
    """
    box = {"Y": (s.box[0], s.box[2]), "X": (s.box[1], s.box[3])} if s.box is not None else {}
    loop = dict(zip(s.loop_axes, s.index))
    centre, extent = [], []
    for a, n in zip(axes, shape):
        if a in loop:
            centre.append(float(loop[a]))
            extent.append(0.0)
        elif a in box:
            lo, hi = box[a]
            centre.append((lo + hi - 1) / 2)   # pixel i is centred on i
            extent.append(float(hi - lo))
        elif a == "C":
            centre.append(0.0)
            extent.append(0.0)
        else:
            centre.append((n - 1) / 2)
            extent.append(float(n))
    return centre, extent
