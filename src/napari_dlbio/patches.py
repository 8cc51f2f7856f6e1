"""Random training patches and augmentation, shared by the torch backends."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import Sample


def patch_shape(sample_shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    return tuple(min(int(p), int(s)) for p, s in zip(patch, sample_shape))


def random_patch(
    sample: Sample,
    patch: Sequence[int],
    rng: np.random.Generator,
    foreground: float = 0.5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A random crop of ``sample``; with probability ``foreground`` centred on an object pixel.

    Crops smaller than ``patch`` (small images) are padded by reflection (image) and
    with an invalid mask (target), so every patch of a batch has the same size.
    """
    spatial = sample.image.shape[1:]
    size = patch_shape(spatial, patch)
    valid = sample.mask if sample.mask is not None else (sample.target > 0 if sample.target is not None else None)
    if valid is not None and rng.random() < foreground and valid.any():
        idx = np.flatnonzero(valid)
        centre = np.unravel_index(idx[rng.integers(len(idx))], spatial)
        start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, spatial)]
    else:
        start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, spatial)]
    sl = tuple(slice(a, a + s) for a, s in zip(start, size))
    x = sample.image[(slice(None),) + sl]
    y = None if sample.target is None else sample.target[sl]
    m = None if sample.mask is None else sample.mask[sl]
    full = tuple(int(p) for p in patch)
    if size != full:
        pad = [(0, f - s) for f, s in zip(full, size)]
        x = np.pad(x, [(0, 0)] + pad, mode="reflect" if min(size) > 1 else "edge")
        if y is not None:
            m = np.ones(size, bool) if m is None else m
            y = np.pad(y, pad)
            m = np.pad(m, pad)
    return x, y, m


def augment(
    x: np.ndarray,
    y: np.ndarray | None,
    m: np.ndarray | None,
    rng: np.random.Generator,
    flips: bool = True,
    intensity: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Flips and rot90 in the YX plane (square patches) and a random intensity scale/shift."""
    arrs = [x, y, m]
    if flips:
        nd = x.ndim - 1
        for ax in range(nd):
            if rng.random() < 0.5:
                arrs = [None if a is None else np.flip(a, axis=a.ndim - nd + ax) for a in arrs]
        if x.shape[-1] == x.shape[-2]:
            k = int(rng.integers(4))
            arrs = [None if a is None else np.rot90(a, k, axes=(-2, -1)) for a in arrs]
    x, y, m = (None if a is None else np.ascontiguousarray(a) for a in arrs)
    if intensity:
        x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    return x.astype(np.float32, copy=False), y, m
