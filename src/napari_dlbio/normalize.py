"""Intensity normalisation and input checks shared by all backends.

Percentile bounds are normally taken from the item being predicted. A block of a
larger item must use the bounds of the *whole* item, or each block would be
stretched differently: :func:`item_bounds` makes :func:`percentile_bounds` (and so
:func:`percentile_normalize`, which every backend's predict path uses) return the
given bounds for the duration of a block, and :class:`IntensitySample` computes
those bounds from an item read block by block.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar

import numpy as np

from .config import Normalization

FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_image(item: np.ndarray, name: str = "image") -> None:
    """Refuse input no network can use, naming the problem.

    Call it on the raw values, before any cast to float32: a cast would turn
    complex values real silently and finite values beyond float32's range into inf.
    """
    dtype = np.dtype(getattr(item, "dtype", np.asarray(item).dtype))
    check_dtype(dtype, name)
    item = np.asarray(item)
    if item.size == 0:
        raise ValueError(f"{name} is empty (shape {item.shape})")
    if not np.issubdtype(dtype, np.floating):
        return  # integers and bool are finite and fit float32's range
    bad = ~np.isfinite(item)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN or infinite pixel(s); replace them "
            "(e.g. with 0) before running a model"
        )
    if dtype.itemsize > 4:
        big = np.abs(item) > FLOAT32_MAX
        if big.any():
            raise ValueError(
                f"{name} has {int(big.sum())} value(s) beyond float32's range (up to "
                f"{float(np.abs(item).max()):.3g}, float32 holds up to {FLOAT32_MAX:.3g}); "
                "rescale the image first"
            )


def check_dtype(dtype, name: str = "image") -> None:
    """Refuse data types no network can use (complex, text, objects); cheap, so check it first."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(
            f"{name} is complex ({dtype}): complex images are not supported; "
            "take the magnitude or the real part first"
        )
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise ValueError(f"{name} has data type {dtype}, not numbers; give a numeric image")


def check_shape(shape, name: str = "image", axes: str | None = None) -> None:
    """Refuse a whole image with a zero-size axis (it has no item to run on)."""
    shape = tuple(int(n) for n in shape)
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape}{f', axes {axes}' if axes else ''})")


def as_item(item, name: str = "image") -> np.ndarray:
    """A raw item checked by :func:`check_image`, as float32."""
    item = np.asarray(item)
    check_image(item, name)
    return item.astype(np.float32, copy=False)


def percentile_bounds(
    item: np.ndarray, settings: Normalization, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, scale)`` of shape ``(C, 1, ...)`` with ``x_norm = (x - lo) / scale``.

    Backends that must undo the normalisation (denoising) keep these to map the
    output back to the input's intensities. ``scale >= eps``, so a constant image
    maps to zeros instead of dividing by zero.
    """
    x = np.asarray(item, dtype=np.float32)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    if settings.mode == "none":
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)
    given = _ITEM_BOUNDS.get()
    if given is not None:
        return _given_bounds(given, settings, shape)
    axes = tuple(range(1, x.ndim)) if settings.per_channel and x.ndim > 1 else None
    lo, hi = np.percentile(x, [settings.low, settings.high], axis=axes, keepdims=True)
    lo, hi = np.broadcast_to(lo, shape), np.broadcast_to(hi, shape)
    return lo.astype(np.float32), np.maximum(hi - lo, eps).astype(np.float32)


def percentile_normalize(
    item: np.ndarray, settings: Normalization | None = None, eps: float = 1e-6
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``item`` (C, ...) to 0/1, as float32.

    Percentiles are taken per channel when ``per_channel`` is set.
    """
    settings = settings or Normalization()
    x = np.asarray(item, dtype=np.float32)
    if settings.mode == "none":
        return x
    lo, scale = percentile_bounds(x, settings, eps)
    return ((x - lo) / scale).astype(np.float32, copy=False)


# -- whole-item bounds for blocks ---------------------------------------------------------
Bounds = tuple[np.ndarray, np.ndarray]           # (lo, scale), each of shape (C,)
_ITEM_BOUNDS: ContextVar[Mapping[tuple, Bounds] | None] = ContextVar("napari_dlbio_item_bounds", default=None)


def bounds_key(settings: Normalization) -> tuple:
    """What percentile bounds depend on, besides the data."""
    return (float(settings.low), float(settings.high), bool(settings.per_channel))


@contextlib.contextmanager
def item_bounds(bounds: Mapping[tuple, Bounds]) -> Iterator[None]:
    """Within the block, :func:`percentile_bounds` returns ``bounds[bounds_key(settings)]``.

    A context variable rather than an argument: every backend's predict reaches
    :func:`percentile_bounds` through its own code (and Cellpose's input preparation
    asks :func:`item_bounds_given`), so one mechanism covers them all unchanged.
    """
    token = _ITEM_BOUNDS.set(dict(bounds))
    try:
        yield
    finally:
        _ITEM_BOUNDS.reset(token)


def item_bounds_given() -> bool:
    """True inside :func:`item_bounds` (a block of a larger item is being predicted)."""
    return _ITEM_BOUNDS.get() is not None


def _given_bounds(given: Mapping[tuple, Bounds], settings: Normalization, shape: tuple) -> Bounds:
    key = bounds_key(settings)
    if key not in given:
        raise ValueError(
            f"no whole-image bounds for percentiles {key[0]:g}-{key[1]:g}: the model's normalizations() "
            "must list every normalisation its predict applies")
    lo, scale = given[key]
    if len(lo) != shape[0]:
        raise ValueError(f"whole-image bounds for {len(lo)} channel(s), the block has {shape[0]}")
    return (np.asarray(lo, np.float32).reshape(shape), np.asarray(scale, np.float32).reshape(shape))


class IntensitySample:
    """An item's intensities gathered block by block, from which percentile bounds are taken.

    8- and 16-bit integers (and bool) keep an exact histogram per channel. Other types
    keep every value when the item has at most ``max_values`` pixels, else those on a
    regular grid (every ``stride``-th pixel per dimension, the same grid whatever the
    blocks). Exact bounds matter: blockwise prediction of an item that could be
    predicted whole must normalise it exactly as whole-image prediction does.
    """

    def __init__(self, dtype, n_channels: int, spatial: Sequence[int], max_values: int = 2**22) -> None:
        dtype = np.dtype(dtype)
        self.n_channels = int(n_channels)
        self.hist = dtype == np.bool_ or (np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2)
        self.offset = int(np.iinfo(dtype).min) if self.hist and dtype != np.bool_ else 0
        n_bins = 2 if dtype == np.bool_ else (2 ** (8 * dtype.itemsize) if self.hist else 0)
        self.counts = np.zeros((self.n_channels, n_bins), np.int64)
        n = int(np.prod(spatial))
        self.stride = 1 if self.hist else max(1, math.ceil((n / max_values) ** (1 / len(spatial))))
        self.values: list[np.ndarray] = []

    def add(self, block: np.ndarray, origin: Sequence[int]) -> None:
        """A raw block ``(C, *spatial)`` whose first pixel is at ``origin`` of the item."""
        if self.hist:
            for c in range(self.n_channels):
                v = np.asarray(block[c]).ravel().astype(np.int64) - self.offset
                self.counts[c] += np.bincount(v, minlength=self.counts.shape[1])
            return
        grid = tuple(slice((-o) % self.stride, None, self.stride) for o in origin)
        self.values.append(np.asarray(block[(slice(None),) + grid], np.float32).reshape(self.n_channels, -1))

    def bounds(self, settings: Normalization, eps: float = 1e-6) -> Bounds:
        """``(lo, scale)`` per channel, as :func:`percentile_bounds` gives them for the whole item."""
        q = [settings.low, settings.high]
        if self.hist:
            counts = self.counts if settings.per_channel else self.counts.sum(0, keepdims=True)
            lohi = np.array([_hist_percentiles(c, q) for c in counts], np.float32) + self.offset
        else:
            values = np.concatenate(self.values, axis=1)
            values = values if settings.per_channel else values.reshape(1, -1)
            lohi = np.percentile(values, q, axis=1).T.astype(np.float32)
        lohi = np.broadcast_to(lohi, (self.n_channels, 2))
        return lohi[:, 0].copy(), np.maximum(lohi[:, 1] - lohi[:, 0], eps).astype(np.float32)


def _hist_percentiles(counts: np.ndarray, q: Sequence[float]) -> list[float]:
    """``np.percentile``'s linear interpolation, from a histogram of bin values 0..n-1."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    out = []
    for p in q:
        pos = p / 100.0 * (n - 1)
        i = math.floor(pos)
        a = float(np.searchsorted(cum, i, side="right"))
        b = float(np.searchsorted(cum, min(i + 1, n - 1), side="right"))
        out.append(a + (pos - i) * (b - a))
    return out
