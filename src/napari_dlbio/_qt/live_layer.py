"""The layer of a prediction that is being written to OME-Zarr: it fills in as blocks finish.

The job writes blocks into the store's working copy; this side only reads: it
adds the layer (lazy zarr arrays, the source's scale/translate) once the first
arrays exist, refreshes it at most once a second, and at the end either gives way
to the finished store's layers or, after a cancel, stays as ``… (partial)``.
"""

from __future__ import annotations

import time

from .. import to_store
from .._layers import PROVENANCE_KEY, LayerSnapshot, geometry_for, unique_name

REFRESH_S = 1.0


class LiveLayer:
    """What one image's running prediction has written so far, as a napari layer."""

    def __init__(self, viewer, snap: LayerSnapshot, final: str, model: str) -> None:
        self.viewer, self.snap, self.final, self.model = viewer, snap, final, model
        self.layer = None
        self._shown = 0.0

    def update(self) -> None:
        """Add the layer when the store has arrays, else refresh it (at most once a second)."""
        now = time.monotonic()
        if now - self._shown < REFRESH_S:
            return
        self._shown = now
        if self.layer is not None:
            self.layer.refresh()
            return
        arrays = to_store.working_arrays(self.final)
        main = [a for a in arrays if a[0] in ("labels", "image")]
        if main:
            self._add(*main[0])

    def _add(self, name: str, kind: str, array, axes: str) -> None:
        scale, translate = geometry_for(self.snap, axes or self.snap.axes.replace("C", ""))
        base = f"{self.snap.name}_{self.model}"
        meta = {"name": unique_name(f"{base} (running)", [lay.name for lay in self.viewer.layers]),
                "scale": scale, "translate": translate,
                "metadata": {PROVENANCE_KEY: {"store": str(to_store.working_store(self.final)),
                                              "source_layer": self.snap.name, "output": name}}}
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        self.layer = add(array, **meta)

    def finish(self) -> None:
        """The finished store's layers replace this one."""
        if self.layer is not None and self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
        self.layer = None

    def keep_partial(self) -> str | None:
        """After a cancel: the blocks done stay, named ``… (partial)``; returns the name."""
        if self.layer is None:
            self._shown = 0.0
            self.update()   # the blocks done before the first refresh
        if self.layer is None:
            return None
        self.layer.refresh()
        taken = [lay.name for lay in self.viewer.layers if lay is not self.layer]
        self.layer.name = unique_name(f"{self.snap.name}_{self.model} (partial)", taken)
        return self.layer.name


def time_left(start: float, fraction: float | None) -> str:
    """``about N min left`` from the time since ``start`` and the fraction done."""
    if not fraction or fraction <= 0.02 or fraction >= 1:
        return ""
    left = (time.monotonic() - start) * (1 - fraction) / fraction
    return f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"
