"""Whether blockwise prediction shows its blocks: the check of the tests and of ``bench_scale``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import tasks
from .metrics import match
from .stitching import count_cut_objects


def blockwise_agreement(model, image: np.ndarray, block: int, settings=None, axes: str | None = None
                        ) -> dict[str, Any]:
    """Blockwise vs whole-image prediction of one image that fits in memory: the seams check.

    Labels: AP@0.5 between the two label images and the objects whose outline follows a
    block line in each (:func:`~napari_dlbio.stitching.count_cut_objects`); images: the
    largest difference relative to the whole image's output range. Both with timings.
    """
    t0 = time.perf_counter()
    whole = tasks.predict(model, image, axes, settings).outputs
    t1 = time.perf_counter()
    parts = tasks.predict(model, image, axes, settings, block_size=block).outputs
    out: dict[str, Any] = {"whole_s": t1 - t0, "blocks_s": time.perf_counter() - t1}
    if "labels" in whole:
        a, b = np.asarray(whole["labels"]), np.asarray(parts["labels"])
        out.update(ap=match(a, b).ap, cut_whole=count_cut_objects(a, block), cut_blocks=count_cut_objects(b, block),
                   n_whole=int(len(np.unique(a)) - 1), n_blocks=int(len(np.unique(b)) - 1), labels=(a, b))
    else:
        a, b = np.asarray(whole["image"]), np.asarray(parts["image"])
        out.update(max_diff=float(np.abs(a - b).max()), relative=float(np.abs(a - b).max() / max(np.ptp(a), 1e-12)))
    return out
