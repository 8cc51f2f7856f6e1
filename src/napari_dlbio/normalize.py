"""Intensity normalisation and input checks shared by all backends."""

from __future__ import annotations

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
