"""Predictions of the Predict dock written to OME-Zarr stores, for layers larger than memory.

A layer (numpy, or lazy: dask/zarr, multiscale level 0) is predicted block by
block (:mod:`napari_dlbio.blockwise`) into ``<folder>/<image>_<model>.ome.zarr``
(:mod:`napari_dlbio.outputs`): nothing image-sized is held in memory, and the
blocks can run on a Dask cluster (:mod:`napari_dlbio.cluster`), whose workers
read the image from its file. While the job runs, :func:`working_arrays` opens
what is written so far, so the dock shows a layer that fills in as blocks finish;
when it is done, :func:`store_layers` opens the finished store lazily (its
pyramid) as the result layers. A cancelled run leaves its working store, which
a rerun of the same prediction does not reuse (the CLI's ``--resume`` does).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ngff
from ._layers import PROVENANCE_KEY, LayerSnapshot, geometry_for, safe_model_name, unique_name
from .jobs import JobContext

LARGE_BYTES = 512 * 2**20   # layers above this (or lazy ones) go to OME-Zarr by default


@dataclass(frozen=True)
class StoreDone:
    """One image predicted into ``store`` (finished, renamed to its final name)."""

    image: LayerSnapshot           # the source's name and geometry (its data stays behind)
    store: str
    model: Any                     # a requests.ModelRef
    seconds: float


def is_large(data: Any) -> bool:
    """Lazy arrays (dask, zarr: maybe larger than memory) and arrays above :data:`LARGE_BYTES`."""
    import numpy as np

    if not isinstance(data, np.ndarray):
        return True
    return data.nbytes > LARGE_BYTES


def store_path(folder: str | Path, image: str, model: str) -> Path:
    """``<folder>/<image>_<model>.ome.zarr`` (names made file-safe)."""
    return ngff.output_path(folder, f"{safe_model_name(image)}_{safe_model_name(model)}.tif", "ome-zarr")


def working_store(final: str | Path) -> Path:
    """Where a store is written until it is finished (then renamed to ``final``)."""
    from .output_layout import working_path

    return working_path(Path(final))


def image_input(snap: LayerSnapshot) -> tuple[Any, Any]:
    """The array to read and, when the layer has a file, its ``ngff.ImageSource`` (for workers).

    The file is used only when its (level 0) array has the layer's shape.
    """
    if snap.source_path:
        with contextlib.suppress(Exception):  # not a format we read: the layer's own data
            opened = ngff.open_image(snap.source_path)
            if tuple(opened.array.shape) == snap.shape:
                return opened.array, opened.source
    return snap.data, None


def predict_to_store(model, snap: LayerSnapshot, folder: str, model_ref, *, settings=None, channels=None,
                     block_size=None, overlap=None, runner=None, model_source=None,
                     ctx: JobContext | None = None) -> StoreDone:
    """Predict ``snap`` into its OME-Zarr store; raises Cancelled (the working store stays)."""
    from .jobs import Cancelled

    ctx = ctx or JobContext()
    data, source = image_input(snap)
    if runner is not None and source is None:
        raise ValueError(f"layer {snap.name!r} has no file that the cluster's workers can read; save it as "
                         "OME-Zarr (or TIFF) and open that, or run on this computer")
    final = store_path(folder, snap.name, model_ref.name)
    ndim = model.item_ndim(model.coerce_predict(settings))
    axes = snap.axes
    scale, translate = geometry_for(snap, axes)  # per data axis; C of an RGB layer: 1/0
    chunks = ngff.default_chunks(axes, snap.shape, ndim, block_size)
    out = ngff.output_factory(final, "ome-zarr", axes, scale, translate, chunks, ndim=ndim, source=source)
    start = time.monotonic()
    from . import tasks   # here: napari's process reads results of this module, only jobs predict

    pred = tasks.predict(model, data, axes, settings, ctx, rgb=snap.rgb, channels=channels, out=out,
                         block_size=block_size, overlap=overlap, runner=runner,
                         model_source=model_source if runner is not None else None,
                         image_source=source if runner is not None else None)
    if pred.cancelled:
        raise Cancelled(f"cancelled; the blocks done are kept in {out.path}")
    out.finalize(attrs={"model": model_ref.name})
    return StoreDone(_without_data(snap), str(final), model_ref, time.monotonic() - start)


def _without_data(snap: LayerSnapshot) -> LayerSnapshot:
    from dataclasses import replace

    return replace(snap, data=None)


def working_arrays(final: str | Path) -> list[tuple[str, str, Any, str]]:
    """``(name, kind, array, axes)`` of what a running prediction has written so far, lazily.

    Instance labels are stitched only after every block is predicted: until then the
    raw labels (one id per object of a block, objects on block borders not joined yet)
    are shown; images (denoised output) fill in directly.
    """
    import zarr

    root = working_store(final)
    if not root.exists():
        return []
    out = []
    for name, kind, array, axes in _outputs_so_far(root):
        raw = sorted((root / ".dlbio" / "raw").glob("*")) if kind == "labels" else []
        if raw and len(raw) == 1:
            # The job removes raw labels once the item is stitched, possibly between the
            # glob and the open: then the (already stitched) output itself is shown.
            with contextlib.suppress(FileNotFoundError, OSError):
                arr = zarr.open_array(str(raw[0]), mode="r")
                if arr.shape == array.shape:
                    array = arr
        out.append((name, kind, array, axes))
    return out


def _outputs_so_far(root: Path) -> list[tuple[str, str, Any, str]]:
    """The level-0 arrays of a working store, by the layout :mod:`napari_dlbio.outputs` writes
    (labels in ``labels/<name>/0``, the image in ``0``; axes from the dimension names)."""
    import zarr

    found = []
    for path, name, kind in [*((p, p.parent.name, "labels") for p in sorted(root.glob("labels/*/0"))),
                             (root / "0", "image", "image")]:
        if not path.exists():
            continue
        with contextlib.suppress(Exception):  # being created this very moment
            arr = zarr.open_array(str(path), mode="r")
            names = getattr(arr.metadata, "dimension_names", None) or ()
            found.append((name, kind, arr, "".join(str(n).upper() for n in names)))
    return found


def store_layers(done: StoreDone, prov: dict[str, Any], existing=()) -> list[tuple]:
    """LayerDataTuples of a finished store: lazy pyramids with the source's scale and translate."""
    from ._layers import _layer_suffix

    taken = set(existing)
    base = f"{done.image.name}_{done.model.suffix or _layer_suffix(done.model.backend) or done.model.name}"
    out = []
    for layer in ngff.open_output(done.store):
        main = layer.name in ("labels", "image")
        name = unique_name(base if main else f"{base}_{layer.name}", taken)
        taken.add(name)
        data = layer.data if len(layer.data) > 1 else layer.data[0]
        meta = {"name": name, "scale": list(layer.scale), "translate": list(layer.translate),
                "multiscale": len(layer.data) > 1,
                "metadata": {PROVENANCE_KEY: {**prov, "output": layer.name, "axes": layer.axes,
                                              "store": done.store}}}
        if layer.kind == "image" and not main:
            meta.update(colormap="magma", blending="additive")
        out.append((data, meta, layer.kind))
    return out
