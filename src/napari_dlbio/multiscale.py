"""Multiscale pyramids of outputs on disk and their OME-Zarr (NGFF) metadata.

Each level is computed from the one above it on disk, chunk by chunk with dask,
so no level is ever held whole in memory: labels by taking every other pixel
(a downsampled label image must hold only ids that exist), images by the mean of
2 x 2 pixels. Only Y and X are halved (Z is often coarse already, and a 2D model
predicts each plane on its own), until the larger of the two is at most
:data:`SMALLEST_EDGE`. The metadata is written by ome-zarr's writer functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SMALLEST_EDGE = 1024
_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def create_level(group, key: str, shape: Sequence[int], dtype, chunks: Sequence[int], axes: str,
                 zarr_format: int = 3):
    """An empty array (reads as 0 until written) in NGFF's chunk layout for its zarr format."""
    import zarr

    kw: dict[str, Any] = {}
    if zarr_format == 2:
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}  # NGFF 0.4's nested chunks
    else:
        kw["dimension_names"] = [a.lower() for a in axes]
    return zarr.create_array(group.store, name=f"{group.path}/{key}".strip("/"), shape=tuple(shape),
                             dtype=np.dtype(dtype), chunks=tuple(chunks), fill_value=0,
                             zarr_format=zarr_format, overwrite=True, **kw)


def n_levels(shape: Sequence[int], axes: str) -> int:
    """Levels (level 0 included) until Y and X are both at most SMALLEST_EDGE."""
    yx = max(shape[axes.index("Y")], shape[axes.index("X")])
    n = 1
    while yx > SMALLEST_EDGE:
        yx = (yx + 1) // 2
        n += 1
    return n


def write_pyramid(group, axes: str, labels: bool, zarr_format: int = 3, ctx=None) -> int:
    """Write levels 1, 2, ... next to ``group["0"]``; returns the number of levels."""
    import dask.array as da

    level = group["0"]
    total = n_levels(level.shape, axes)
    iy, ix = axes.index("Y"), axes.index("X")
    for k in range(1, total):
        if ctx is not None:
            ctx.check()
        src = da.from_zarr(level)
        if labels:
            half = src[tuple(slice(None, None, 2) if i in (iy, ix) else slice(None) for i in range(src.ndim))]
        else:
            even = {i: 2 * c for i, c in enumerate(level.chunks) if i in (iy, ix)}
            half = da.coarsen(np.mean, src.rechunk(even), {iy: 2, ix: 2}, trim_excess=True)
            half = half.astype(level.dtype)
        nxt = create_level(group, str(k), half.shape, level.dtype,
                           [min(c, s) for c, s in zip(level.chunks, half.shape)], axes, zarr_format)
        # Aligned chunks: each task writes whole chunks of its own, no lock needed.
        da.store(half.rechunk(nxt.chunks), nxt, lock=False, scheduler="threads")
        level = nxt
    return total


def datasets(n: int, scale: Sequence[float], translate: Sequence[float], axes: str,
             labels: bool) -> list[dict]:
    """Each level's path and transforms. A strided level's pixel i sits on level 0's pixel
    2i (same offset); a mean level's pixel is centred between the pixels it averages."""
    out = []
    for k in range(n):
        f = [2**k if a in "YX" else 1 for a in axes]
        s = [float(v) * g for v, g in zip(scale, f)]
        t = [float(o) + (0.0 if labels else (g - 1) / 2 * v) for o, v, g in zip(translate, scale, f)]
        out.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": s}, {"type": "translation", "translation": t}]})
    return out


def write_image_metadata(group, version: str, axes: str, units: dict[str, str], sets: list[dict],
                         name: str) -> None:
    """NGFF ``multiscales`` (axes with types and units, one entry per level)."""
    from ome_zarr.format import format_from_version
    from ome_zarr.writer import write_multiscales_metadata

    meta = [{"name": a.lower(), "type": _TYPES[a], **({"unit": units[a]} if units.get(a) else {})}
            for a in axes]
    write_multiscales_metadata(group, sets, fmt=format_from_version(version), axes=meta, name=name)


def write_label_metadata(labels_group, name: str, version: str, source_image: str | None) -> None:
    """NGFF ``image-label`` on ``labels/<name>`` and its entry in ``labels/``'s list (once,
    so finishing an output again after an interruption lists it once)."""
    from ome_zarr.format import format_from_version
    from ome_zarr.writer import add_metadata, get_metadata
    from ome_zarr.writer import write_label_metadata as write

    fmt = format_from_version(version)
    listed = get_metadata(labels_group).get("labels", [])
    if name in listed:
        add_metadata(labels_group, {"labels": [n for n in listed if n != name]}, fmt=fmt)
    extra = {"source": {"image": source_image}} if source_image else {}
    write(labels_group, name, fmt=fmt, **extra)
    if version != "0.4":
        # NGFF 0.5 wants "version" in every group's "ome" attributes; ome-zarr (0.18) writes
        # it with multiscales only, so the labels group would not validate without it.
        add_metadata(labels_group, {"version": version}, fmt=fmt)
