"""The work of one block, as top-level functions over frozen tasks of plain data.

A runner (:class:`napari_dlbio.blockwise.SerialRunner` here, a dask.distributed one
elsewhere) ships ``fn(task)`` to wherever it runs, so a task carries only what
pickles: paths of zarr arrays, a :class:`~napari_dlbio.requests.ModelSource` or an
``ngff.ImageSource``. In-process a task may carry live objects instead (the model,
numpy or zarr arrays); :func:`resolve_model`, :func:`open_image` and
:func:`open_array` accept both.

Each function writes only its block's core and records its completion last, so a
block cut short leaves no marker and is simply done again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import stitching
from .axes import ItemPlan
from .blocks import Block, Placement, Span, placed
from .blockstate import load_arrays, save_arrays, write_marker
from .normalize import as_item, item_bounds
from .objects import SHAPES  # noqa: F401 - vector outputs (polygons) are not written blockwise


@runtime_checkable
class Openable(Protocol):
    """A plain-data description of an image that opens as a lazy array (``ngff.ImageSource``).

    ``kind`` ("tiff", "zarr", "ome-zarr") tells it from arrays, which may have an ``open`` too (zarr's).
    """

    kind: str

    def open(self) -> Any: ...


@lru_cache(maxsize=8)
def _opened(source: Openable) -> Any:
    # Opening a TIFF or an OME-Zarr reads its metadata: once per process and image.
    return source.open()


def open_image(image: Any) -> Any:
    """An array-like supporting numpy slicing: ``image`` itself, or the opened source."""
    return _opened(image) if isinstance(image, Openable) else image


def read_region(image: Any, selection: tuple) -> np.ndarray:
    """``image[selection]`` as numpy, for an array-like or an ``ImageSource``; only that region is read."""
    return np.asarray(open_image(image)[selection])


def open_array(array: Any) -> Any:
    """An output array: a zarr path opened for writing, or the array itself."""
    if isinstance(array, str):
        import zarr

        return zarr.open_array(array, mode="r+")
    return array


@runtime_checkable
class Loadable(Protocol):
    """Where a model comes from, as plain data (``requests.ModelSource``)."""

    @property
    def key(self) -> tuple: ...

    def load(self) -> Any: ...


def resolve_model(model_or_source: Any) -> Any:
    """A live model: ``model_or_source`` itself, or the model its ``ModelSource`` loads.

    Loaded models stay in this process's :data:`~napari_dlbio.requests.MODELS`, so a
    worker loads each model once, whatever the number of blocks it runs.
    """
    from .modelcache import MODELS

    if not isinstance(model_or_source, Loadable):
        return model_or_source
    model = MODELS.get(model_or_source.key)
    if model is None:
        model = model_or_source.load()
        MODELS.put(model_or_source.key, model)
    return model


@dataclass(frozen=True, eq=False)
class Target:
    """Where one output of an item goes: a zarr path (or, in-process, an array)."""

    name: str
    array: Any
    channels: bool          # the output has a channel axis
    dtype: str


@dataclass(frozen=True, eq=False)
class ItemRef:
    """One item of the input: the image (array or source), how to cut it, and which item."""

    image: Any
    plan: ItemPlan
    index: tuple[int, ...]

    @property
    def key(self) -> str:
        return "-".join(str(i) for i in self.index) or "0"

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        where = self.plan.where(self.index)
        name = "image" + (f" at {where}" if where else "")
        return as_item(self.plan.read(open_image(self.image), self.index, None, region), name)

    def write(self, target: Target, result: np.ndarray, region: tuple[slice, ...]) -> None:
        self.plan.write(open_array(target.array), self.index, result.astype(target.dtype, copy=False),
                        channels=target.channels, region=region)


@dataclass(frozen=True, eq=False)
class PredictTask:
    item: ItemRef
    block: Block
    model: Any                          # a live model or a requests.ModelSource
    settings: Any                       # the backend's Predict settings
    bounds: tuple                       # ((normalize.bounds_key, lo, scale), ...) of the whole item
    targets: tuple[Target, ...]
    marker: str
    instances: str = ""                 # the name of the instance labels output ("" for none)
    raw: str = ""                       # zarr path of the item's raw labels
    halo: str = ""                      # npz path of this block's halo labels


def block_name(task: Any) -> str:
    """How messages name a task's block: ``block 1-2 (y 512:1024, x 1024:1536) at t=3``."""
    item, block = task.item, task.block
    where = item.plan.where(item.index)
    return f"block {block.key} ({block.describe(item.plan.spatial_axes)})" + (f" at {where}" if where else "")


def predict_block(task: PredictTask) -> int:
    """Predict one block on core + halo and write its core; returns the objects in its core."""
    model = resolve_model(task.model)
    block = task.block
    x = task.item.read(block.outer_slices())
    bounds = {key: (np.asarray(lo), np.asarray(sc)) for key, lo, sc in task.bounds}
    with item_bounds(bounds), placed(Placement.of(block, task.item.plan.spatial_shape)):
        res = model.predict(x, task.settings)
    core, n = block.core_in_outer(), 0
    for target in task.targets:
        arr = np.asarray(res[target.name])
        if target.name == task.instances:
            n = _write_instances(task, arr, core)
            continue
        if not target.channels and arr.ndim == len(core) + 1:
            arr = arr[0]  # a single-channel result written without a channel axis
        task.item.write(target, arr[(Ellipsis,) + core], block.core_slices())
    write_marker(task.marker)
    return n


def _write_instances(task: PredictTask, labels: np.ndarray, core: tuple[slice, ...]) -> int:
    block = task.block
    local, halo, ids = stitching.split_block(labels, core, [s for s, _ in block.core], task.item.plan.spatial_shape)
    target = next(t for t in task.targets if t.name == task.instances)
    raw = stitching.raw_labels(local, ids, np.dtype(target.dtype))
    open_array(task.raw)[block.core_slices()] = raw
    # Provisional ids in the output, so a viewer sees the block at once; relabelling replaces them.
    task.item.write(target, raw, block.core_slices())
    save_arrays(task.halo, halo=halo, ids=ids)
    return len(ids)


@dataclass(frozen=True, eq=False)
class MatchTask:
    item: ItemRef
    block: Block
    halo: str
    raw: str
    regions: tuple[tuple[Span, ...], ...]   # where this block's halo covers a neighbour's core


def match_block(task: MatchTask) -> tuple[np.ndarray, np.ndarray]:
    """``(raw ids of the core's objects, raw id pairs that are one object)`` across this block's halo."""
    saved = load_arrays(task.halo)
    halo, ids = saved["halo"], saved["ids"]
    raw = open_array(task.raw)
    origin = [o for o, _ in task.block.outer]
    pairs = [np.zeros((0, 2), np.int64)]
    for region in task.regions:
        here = tuple(slice(a - o, b - o) for (a, b), o in zip(region, origin))
        there = np.asarray(raw[tuple(slice(a, b) for a, b in region)])
        pairs.append(stitching.match_pairs(halo[here], there, ids))
    return ids, np.concatenate(pairs)


@dataclass(frozen=True, eq=False)
class RelabelTask:
    item: ItemRef
    block: Block
    raw: str
    target: Target
    ids: np.ndarray                     # this block's raw ids (sorted)
    final: np.ndarray                   # and their final ids
    marker: str


def relabel_block(task: RelabelTask) -> None:
    """Final ids for one block's core, from its raw labels (repeating it is harmless)."""
    region = task.block.core_slices()
    raw = np.asarray(open_array(task.raw)[region])
    task.item.write(task.target, stitching.relabel(raw, task.ids, task.final), region)
    write_marker(task.marker)
