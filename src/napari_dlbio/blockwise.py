"""Blockwise prediction of items larger than memory (or than a block asked for).

:func:`napari_dlbio.tasks.predict` hands an item here when it is larger than a
block and its outputs are on disk (or a block size was asked for). The item is
cut into blocks (:mod:`.blocks`), each predicted on its core plus a halo with
the whole item's normalisation bounds, and its core written straight into the
outputs; instance labels are then stitched (:mod:`.stitching`). A
:class:`Runner` runs the blocks: :class:`SerialRunner` in this process, or a
dask.distributed one (``napari_dlbio.cluster``). Progress and completion are
kept in the output store (:mod:`.blockstate`), so a run cut short resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import blocktasks as bt
from . import stitching
from .axes import ItemPlan
from .blocks import BlockGrid, intersect, per_dim, plan_grid
from .blockstate import BlockState, load_arrays, save_arrays
from .blocktasks import open_image, read_region, resolve_model  # noqa: F401 - the contract's helpers
from .jobs import Cancelled, JobContext
from .normalize import IntensitySample, bounds_key
from .objects import AGREEMENT, OBJECTS

__all__ = ["BlockOptions", "DiskOutputs", "Runner", "SerialRunner", "call_with_retry", "predict_blockwise",
           "read_region", "resolve_model", "wanted"]


class Runner(Protocol):
    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], ctx: JobContext,
            name: Callable[[Any], str] = str) -> Iterator[tuple[Any, Any]]:
        """Run fn(task) for every task, yield (task, result) as each completes.

        ctx.check() between completions; on Cancelled: schedule nothing more, wait for
        the running ones (their results are still written/recorded), then re-raise
        Cancelled. A task that fails is retried once; failing twice raises
        RuntimeError naming name(task) and the error.
        """
        ...


def call_with_retry(fn: Callable[[Any], Any], task: Any, name: Callable[[Any], str] = str) -> Any:
    """``fn(task)``, once more if it fails; a second failure names the task."""
    try:
        return fn(task)
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception:  # noqa: BLE001 - any failure earns one retry (a full disk freed, a flaky read)
        pass
    try:
        return fn(task)
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"{name(task)} failed twice: {type(exc).__name__}: {exc}") from exc


class SerialRunner:
    """Runs the tasks one after the other in this process (tasks may hold live objects)."""

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], ctx: JobContext,
            name: Callable[[Any], str] = str) -> Iterator[tuple[Any, Any]]:
        for task in tasks:
            ctx.check()
            yield task, call_with_retry(fn, task, name)


@runtime_checkable
class DiskOutputs(Protocol):
    """An :data:`~napari_dlbio.tasks.OutFactory` whose arrays are zarr arrays on disk.

    ``path``: the output store (a folder); block progress is kept in ``path/.dlbio``.
    ``resumable``: True when the arrays are zarr (False: e.g. memory-mapped TIFFs).
    ``array_path(name)`` (after ``out(name, ...)``): a path ``zarr.open_array`` opens, so
    workers reopen outputs by it. A factory made to resume must, when called, reopen
    the arrays an interrupted run left (``ngff.output_factory(..., resume=True)``,
    ``tasks.zarr_outputs(..., resume=True)``).
    """

    path: Path
    resumable: bool

    def __call__(self, name: str, shape: tuple, dtype: Any) -> Any: ...

    def array_path(self, name: str) -> str: ...


@dataclass(frozen=True)
class BlockOptions:
    """How :func:`napari_dlbio.tasks.predict` cuts items into blocks.

    ``size``: core edge in pixels (per spatial dim or one for all); None: from
    ``memory_limit`` (bytes per worker, default 1 GiB). Sizes are rounded up to
    multiples of the output chunks and of the model's stride. ``overlap``: the halo
    per side (None: the model's :meth:`~napari_dlbio.backends.base.ModelBase.block_needs`).
    ``runner``: None runs blocks in this process. ``resume``: continue a run cut short
    in the same output store. ``model_source`` (a ``requests.ModelSource``) and
    ``image_source`` (an ``ngff.ImageSource``): what tasks carry instead of the live
    model and the in-process image, for runners that ship tasks to other processes.
    """

    size: int | tuple[int, ...] | None = None
    overlap: int | tuple[int, ...] | None = None
    memory_limit: int | None = None
    runner: Runner | None = None
    resume: bool = False
    model_source: Any = None
    image_source: Any = None


def _grid(model, plan: ItemPlan, settings, options: BlockOptions, chunks=None) -> BlockGrid:
    needs = model.block_needs(settings)
    nd = plan.ndim
    halo = per_dim(needs.halo if options.overlap is None else options.overlap, nd, "the block overlap")
    return plan_grid(plan.spatial_shape, halo, per_dim(needs.multiple, nd, "the block multiple"), chunks,
                     options.size, options.memory_limit, plan.n_channels)


def wanted(model, plan: ItemPlan, settings, out, options: BlockOptions) -> bool:
    """Blockwise when an item is larger than a block and outputs are on disk or a block size was given."""
    if out is None and options.size is None:
        return False
    return _grid(model, plan, settings, options).n_blocks > 1


@dataclass
class BlockwiseResult:
    outputs: dict[str, Any]
    axes: dict[str, str]
    cancelled: bool
    n_items: int                # items finished
    blocks_done: int            # blocks predicted by this call
    grid: BlockGrid


def predict_blockwise(model, image, plan: ItemPlan, settings, ctx: JobContext, out, unique_labels: bool,
                      options: BlockOptions) -> BlockwiseResult:
    """Predict every item of ``image`` block by block into ``out`` (see the module's doc)."""
    disk = isinstance(out, DiskOutputs) and out.resumable
    if options.resume and not disk:
        raise ValueError("resuming needs outputs on disk (a zarr or OME-Zarr output store)")
    state = BlockState(out.path) if disk else BlockState.scratch()
    try:
        run = _Run(model, image, plan, settings, ctx, out, unique_labels, options, state)
        return run.execute()
    finally:
        state.close()


class _Run:
    """One blockwise prediction: the plan, the outputs, then item after item."""

    def __init__(self, model, image, plan, settings, ctx, out, unique_labels, options, state) -> None:
        self.model, self.image, self.plan, self.settings, self.ctx = model, image, plan, settings, ctx
        self.out = out if out is not None else (lambda name, shape, dtype: np.zeros(shape, dtype))
        self.unique, self.options, self.state = unique_labels, options, state
        self.runner: Runner = options.runner or SerialRunner()
        self.instances = "labels" if model.output == "labels" and not model.semantic else ""
        self.computed = 0

    # -- set-up -------------------------------------------------------------------------------
    def execute(self) -> BlockwiseResult:
        saved = self.state.read_plan() if self.options.resume else None
        specs = _specs_from(saved) if saved else self._probe()
        # Raw and final ids never exceed the item's (the stack's) pixel count: see stitching.
        pixels = int(np.prod(self.plan.spatial_shape)) * (self.plan.n_items if self.unique else 1)
        self.labels_dtype = stitching.label_dtype(pixels)
        self.arrays, self.axes = self._outputs(specs)
        self.grid = _grid(self.model, self.plan, self.settings, self.options, self._chunks())
        doc = self._plan_doc(specs)
        if saved:
            self.state.check(doc, saved)
        else:
            self.state.start(doc)
        self.targets = tuple(bt.Target(name, self._where(name), ch is not None, self._dtype(name, dt))
                             for name, (dt, ch) in specs.items())
        self.items_done, cancelled = 0, False
        try:
            self._items()
        except Cancelled:
            cancelled = True
        return BlockwiseResult(self.arrays, self.axes, cancelled, self.items_done, self.computed, self.grid)

    def _dtype(self, name: str, dtype: str) -> str:
        return self.labels_dtype.str if name == self.instances else dtype

    def _probe(self) -> dict[str, tuple[str, int | None]]:
        """Output names, types and channels: the model run on a small corner of the first item."""
        nd = self.plan.ndim
        multiple = per_dim(self.model.block_needs(self.settings).multiple, nd, "the block multiple")
        region = tuple(slice(0, min(s, max(64, 2 * m))) for s, m in zip(self.plan.spatial_shape, multiple))
        first = next(iter(self.plan.indices()))
        res = self.model.predict(bt.ItemRef(self.image, self.plan, first).read(region), self.settings)
        specs = {}
        for name, arr in res.items():
            if name in (bt.SHAPES, OBJECTS, AGREEMENT):
                continue  # no per-object scores blockwise: an object's score would need all its blocks
            arr = np.asarray(arr)
            chan = arr.ndim == nd + 1
            if chan and arr.shape[0] == 1 and "C" not in self.plan.axes:
                chan = False  # a single-channel result of a single-channel image keeps its shape
            specs[name] = (arr.dtype.str, int(arr.shape[0]) if chan else None)
        return specs

    def _outputs(self, specs) -> tuple[dict[str, Any], dict[str, str]]:
        """The output arrays (a factory made to resume reopens those an interrupted run left)."""
        arrays, axes = {}, {}
        for name, (dtype, ch) in specs.items():
            arrays[name] = self.out(name, self.plan.out_shape(ch), np.dtype(self._dtype(name, dtype)))
            axes[name] = self.plan.out_axes(ch is not None)
        return arrays, axes

    def _chunks(self) -> tuple[int, ...] | None:
        """Spatial chunk sizes every output's chunks divide (None for in-memory outputs)."""
        chunks = None
        for name, arr in self.arrays.items():
            c = _array_chunks(arr)
            if c is None:
                continue
            sp = tuple(c[self.axes[name].index(a)] for a in self.plan.spatial_axes)
            chunks = sp if chunks is None else tuple(math.lcm(a, b) for a, b in zip(chunks, sp))
        return chunks

    def _where(self, name: str) -> Any:
        return self.out.array_path(name) if not self.state.temporary else self.arrays[name]

    def _plan_doc(self, specs) -> dict[str, Any]:
        skip = {"device", "batch_size"}  # where and how fast, not what is computed
        settings = self.settings.model_dump(mode="json", exclude=skip)
        info = self.model.info
        return {
            "version": 1, "shape": list(self.plan.shape), "axes": self.plan.axes,
            "ndim": self.plan.ndim, "channels": list(self.plan.channels) if self.plan.channels else None,
            "block": list(self.grid.size), "halo": list(self.grid.halo),
            "model": [self.model.backend, self.model.display_name, str(info.path) if info else "",
                      info.created if info else ""],
            "settings": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16],
            "outputs": {k: [v[0], v[1]] for k, v in specs.items()},
            "labels_dtype": self.labels_dtype.str, "unique_labels": self.unique,
        }

    # -- items --------------------------------------------------------------------------------
    def _items(self) -> None:
        self.items_done, offset = 0, 0
        blocks = self.grid.blocks()
        self.total = self.plan.n_items * len(blocks)
        self.done = sum(self.state.done("predict", self._key(idx, b))
                        for idx in self.plan.indices() for b in blocks)
        self.ctx.report(self.done, self.total, f"block {self.done}/{self.total}")
        image = self.options.image_source or self.image
        for idx in self.plan.indices():
            item = bt.ItemRef(image, self.plan, tuple(idx))
            self._predict_item(item, blocks)
            if self.instances:
                offset += self._stitch_item(item, blocks, offset if self.unique else 0)
            self.items_done += 1

    def _key(self, idx, block) -> str:
        return "-".join(str(i) for i in (*idx, *block.index))

    def _predict_item(self, item: bt.ItemRef, blocks) -> None:
        todo = [b for b in blocks if not self.state.done("predict", self._key(item.index, b))]
        if not todo:
            return
        raw = str(self.state.raw(item.key))
        if self.instances and not Path(raw).exists():
            import zarr

            zarr.open_array(raw, mode="w", shape=self.grid.shape, chunks=self.grid.size, dtype=self.labels_dtype)
        bounds = self._bounds(item, blocks)
        model = self.options.model_source or self.model
        tasks = [bt.PredictTask(item, b, model, self.settings, bounds, self.targets,
                                str(self.state.marker("predict", self._key(item.index, b))), self.instances,
                                raw, str(self.state.halo(self._key(item.index, b))))
                 for b in todo]
        for _task, _n in self.runner.map(bt.predict_block, tasks, self.ctx, bt.block_name):
            self.done += 1
            self.computed += 1
            self.ctx.report(self.done, self.total, f"block {self.done}/{self.total}")

    def _bounds(self, item: bt.ItemRef, blocks) -> tuple:
        """The whole item's percentile bounds for every normalisation the model applies."""
        norms = [n for n in self.model.normalizations(self.settings) if n.mode == "percentile"]
        if not norms:
            return ()
        self.ctx.report(self.done, self.total, "measuring the image's intensities", kind="info")
        arr = open_image(self.image)
        sample = IntensitySample(arr.dtype, self.plan.n_channels, self.grid.shape)
        for b in blocks:
            self.ctx.check()
            sample.add(self.plan.read(arr, item.index, None, b.core_slices()), [s for s, _ in b.core])
        return tuple((bounds_key(n), *sample.bounds(n)) for n in norms)

    def _stitch_item(self, item: bt.ItemRef, blocks, offset: int) -> int:
        """Match objects across block faces, then relabel every block; returns the item's objects."""
        path = self.state.mapping(item.key)
        if path.is_file():
            relab = stitching.Relabelling.from_arrays(load_arrays(path))
        else:
            relab = self._match(item, blocks, offset)
            save_arrays(path, **relab.to_arrays())
        raw = str(self.state.raw(item.key))
        target = next(t for t in self.targets if t.name == self.instances)
        keys = [self._key(item.index, b) for b in blocks]
        tasks = [bt.RelabelTask(item, b, raw, target, *relab.lut(b.number), str(self.state.marker("relabel", k)))
                 for b, k in zip(blocks, keys) if not self.state.done("relabel", k)]
        for j, _ in enumerate(self.runner.map(bt.relabel_block, tasks, self.ctx, bt.block_name), 1):
            self.ctx.report(self.done, self.total, f"stitching labels: block {j}/{len(tasks)}")
        self.state.drop_item(item.key, keys)
        return relab.n_final

    def _match(self, item: bt.ItemRef, blocks, offset: int) -> stitching.Relabelling:
        raw = str(self.state.raw(item.key))
        tasks = []
        for b in blocks:
            regions = tuple(r for nb in self.grid.neighbours(b) if (r := intersect(b.outer, nb.core)))
            tasks.append(bt.MatchTask(item, b, str(self.state.halo(self._key(item.index, b))), raw, regions))
        ids: list[np.ndarray] = [np.zeros(0, np.int64)] * len(blocks)
        pairs = [np.zeros((0, 2), np.int64)]
        for task, (block_ids, p) in self.runner.map(bt.match_block, tasks, self.ctx, bt.block_name):
            ids[task.block.number] = block_ids
            pairs.append(p)
        return stitching.resolve(ids, np.concatenate(pairs), offset)


def _specs_from(saved: dict) -> dict[str, tuple[str, int | None]]:
    return {k: (v[0], v[1]) for k, v in saved["outputs"].items()}


def _array_chunks(arr) -> tuple[int, ...] | None:
    import zarr

    return tuple(int(c) for c in arr.chunks) if isinstance(arr, zarr.Array) else None
