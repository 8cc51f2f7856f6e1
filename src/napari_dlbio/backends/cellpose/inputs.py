"""Cellpose's input conventions: a float32 copy and a complete ``normalize`` argument.

Used by prediction (:mod:`.model`) and fine-tuning (:mod:`.finetune`) alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import Normalization
from ...normalize import item_bounds_given, percentile_normalize


def _norm_params(norm: Normalization, apply: bool) -> dict[str, Any]:
    """Cellpose's ``normalize`` argument, complete: a partial dict or a bool makes
    ``eval`` edit Cellpose's module-level defaults, so every key is given."""
    return {
        "normalize": bool(apply), "percentile": [norm.low, norm.high], "lowhigh": None, "norm3D": True,
        "invert": False, "sharpen_radius": 0, "smooth_radius": 0, "tile_norm_blocksize": 0,
        "tile_norm_smooth3D": 1,
    }


def prepare_input(item: np.ndarray, norm: Normalization) -> tuple[np.ndarray, dict[str, Any]]:
    """A float32 copy (Cellpose normalises float32 input in place) and the ``normalize`` argument.

    Per-channel percentiles are Cellpose's own normalisation; joint percentiles
    (``per_channel=False``) are applied here and Cellpose's is switched off, as are
    a block's (the whole image's bounds, :func:`napari_dlbio.normalize.item_bounds`).
    """
    x = np.array(item, dtype=np.float32, copy=True)
    if norm.mode == "none":
        return x, _norm_params(norm, False)
    if not norm.per_channel or item_bounds_given():
        return percentile_normalize(x, norm), _norm_params(norm, False)
    return x, _norm_params(norm, True)
