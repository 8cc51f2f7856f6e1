"""How ``bench_scale.py`` checks outputs larger than memory: cut objects read line by line, a crop
predicted whole against the blockwise output, two output stores compared band by band."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def labels_of(final: Path):
    import zarr

    return zarr.open_array(str(final / "labels" / "labels" / "0"), mode="r")


def cuts_on_lines(labels, lines: list[tuple[int, int]]) -> int:
    """Objects cut along block lines, read one line at a time (``labels`` may be a zarr array larger
    than memory). ``lines``: ``(axis, k)``, the line between pixels ``k - 1`` and ``k`` of ``axis``;
    an object cut on two lines counts twice. The count of :func:`stitching.count_cut_objects`."""
    from napari_dlbio.stitching import count_cut_objects

    total = 0
    for axis, k in lines:
        strip = np.asarray(labels[tuple(slice(k - 1, k + 1) if d == axis else slice(None)
                                        for d in range(labels.ndim))])
        sizes = tuple(1 if d == axis else s + 1 for d, s in enumerate(strip.shape))
        total += count_cut_objects(strip, sizes)
    return total


def block_lines(shape: tuple[int, ...], block: tuple[int, ...], first: tuple[int, ...] | None = None,
                stop: tuple[int, ...] | None = None) -> list[tuple[int, int]]:
    """The lines between blocks of ``block`` px (from 0) strictly inside ``first``..``stop`` (default:
    the whole shape), as positions relative to ``first``."""
    first = first or (0,) * len(shape)
    stop = stop or tuple(shape)
    out = []
    for axis, (a, b, size) in enumerate(zip(first, stop, block)):
        k = (a // size + 1) * size
        while k < b:
            out.append((axis, k - a))
            k += size
    return out


def max_id(labels) -> int:
    """The largest id of a (zarr) label image, read chunk by chunk."""
    import dask.array as da

    if isinstance(labels, np.ndarray):
        return int(labels.max())
    return int(da.from_zarr(labels).max().compute())


def whole_image_bounds(model, settings, array) -> dict:
    """The percentile bounds of the whole (lazy) image, gathered band by band as the engine does, so
    that a crop predicted whole is normalised as the whole image would be."""
    from napari_dlbio.normalize import IntensitySample, bounds_key

    norms = [n for n in model.normalizations(settings) if n.mode == "percentile"]
    sample = IntensitySample(array.dtype, 1, array.shape)
    step = array.chunks[-2]
    for y in range(0, array.shape[-2], step):
        band = (slice(None),) * (array.ndim - 2) + (slice(y, y + step), slice(None))
        sample.add(np.asarray(array[band])[None], (0,) * (array.ndim - 2) + (y, 0))
    return {bounds_key(n): sample.bounds(n) for n in norms}


def check_output(final: Path, image: Path, model, settings, block: int) -> dict:
    """Objects, cuts on every block line, and a crop around a block corner predicted whole (with
    64 px of context, more than the networks' receptive radius, and the whole image's
    normalisation) against the same pixels of the output."""
    from napari_dlbio import ngff, tasks
    from napari_dlbio.metrics import match
    from napari_dlbio.normalize import item_bounds

    labels = labels_of(final)
    nd = labels.ndim
    blk = (labels.shape[0],) * (nd == 3) + (block, block)
    out = {"objects": max_id(labels), "cuts": cuts_on_lines(labels, block_lines(labels.shape, blk))}
    # At least ~500 px a side, so that a few objects that differ do not decide the AP.
    centre = [s // 2 // block * block for s in labels.shape[-2:]]
    half, margin = max(block, 256) - block // 16, 64
    lo = [max(0, c - half) for c in centre]
    hi = [min(s, c + half) for c, s in zip(centre, labels.shape[-2:])]
    zs = (slice(None),) * (nd == 3)
    inner = zs + tuple(slice(a, z) for a, z in zip(lo, hi))
    outer = zs + tuple(slice(max(0, a - margin), z + margin) for a, z in zip(lo, hi))
    src = ngff.open_image(image)
    with item_bounds(whole_image_bounds(model, settings, src.array)):
        whole = tasks.predict(model, np.asarray(src.array[outer]), src.axes, settings).outputs["labels"]
    trim = zs + tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner[-2:], outer[-2:]))
    whole, blocks = whole[trim], np.asarray(labels[inner])
    first, stop = (0,) * (nd == 3) + tuple(lo), labels.shape[:1] * (nd == 3) + tuple(hi)
    lines = block_lines(labels.shape, blk, first, stop)
    out.update(crop_ap=match(whole, blocks).ap, crop_cuts=(cuts_on_lines(whole, lines),
                                                          cuts_on_lines(blocks, lines)))
    return out


def same_store(a: Path, b: Path) -> tuple[bool, int]:
    """Whether every level of the labels of two OME-Zarr outputs is equal, band by band."""
    import zarr

    ga = zarr.open_group(str(a / "labels" / "labels"), mode="r")
    gb = zarr.open_group(str(b / "labels" / "labels"), mode="r")
    levels = sorted(k for k in ga.array_keys())
    if levels != sorted(gb.array_keys()):
        return False, len(levels)
    for k in levels:
        x, y = ga[k], gb[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, len(levels)
        step = x.chunks[0]
        for r in range(0, x.shape[0], step):
            if not np.array_equal(x[r:r + step], y[r:r + step]):
                return False, len(levels)
    return True, len(levels)
