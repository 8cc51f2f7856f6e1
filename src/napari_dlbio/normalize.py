"""Intensity normalisation and input checks shared by all backends."""

from __future__ import annotations

import numpy as np

from .config import Normalization


def check_image(item: np.ndarray, name: str = "image") -> None:
    """Refuse input no network can use, naming the problem."""
    if item.size == 0:
        raise ValueError(f"{name} is empty (shape {item.shape})")
    bad = ~np.isfinite(item)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN or infinite pixel(s); replace them "
            "(e.g. with 0) before running a model"
        )


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
