"""The one place that understands image axes.

Axes are strings over ``T Z C Y X`` (e.g. ``"YX"``, ``"ZYX"``, ``"TZCYX"``,
``"YXC"`` for RGB). A model consumes *items* of shape ``(C, Y, X)`` or
``(C, Z, Y, X)``; :class:`ItemPlan` walks every other axis (T, and Z for 2D
models), reads one item at a time (so dask/zarr stacks larger than memory are
read lazily) and puts each result back where it came from, in the input's own
axis order minus C.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

AXES = "TZCYX"


def guess_axes(shape: Sequence[int], rgb: bool = False) -> str:
    """Best guess of the axes of an array, for the user to override.

    A small leading dimension (<= 4) is taken for channels, as microscopy stacks
    rarely have so few Z slices while 2-4 channel images are common.
    """
    nd = len(shape)
    if rgb:
        if nd < 3 or shape[-1] not in (3, 4):
            raise ValueError(f"an RGB image needs a last axis of 3 or 4, got shape {tuple(shape)}")
        return {3: "YXC", 4: "ZYXC", 5: "TZYXC"}.get(nd) or _too_many(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        return "CYX" if shape[0] <= 4 else "ZYX"
    if nd == 4:
        if shape[0] <= 4:
            return "CZYX"
        if shape[1] <= 4:
            return "ZCYX"
        return "TZYX"
    if nd == 5:
        return "TZCYX"
    if nd < 2:
        raise ValueError(f"an image needs at least 2 dimensions (Y, X), got shape {tuple(shape)}")
    return _too_many(shape)


def _too_many(shape: Sequence[int]) -> str:
    raise ValueError(
        f"cannot interpret a {len(shape)}-D array of shape {tuple(shape)}; "
        "supported axes are T, Z, C, Y, X (at most 5 dimensions)"
    )


def validate_axes(axes: str, shape: Sequence[int]) -> str:
    axes = axes.upper()
    if len(axes) != len(shape):
        raise ValueError(
            f"axes {axes!r} name {len(axes)} dimensions but the image has {len(shape)} "
            f"(shape {tuple(shape)})"
        )
    bad = set(axes) - set(AXES)
    if bad:
        raise ValueError(f"unknown axis letter(s) {''.join(sorted(bad))!r} in {axes!r}; use T, Z, C, Y, X")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} repeat a letter")
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"axes {axes!r} must contain Y and X")
    return axes


@dataclass(frozen=True)
class ItemPlan:
    """How to cut an array with ``axes`` into items for a model of ``ndim`` spatial dims."""

    axes: str
    shape: tuple[int, ...]
    ndim: int = 2
    channels: tuple[int, ...] | None = None  # which channels to feed; None = all

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", validate_axes(self.axes, self.shape))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.ndim not in (2, 3):
            raise ValueError(f"a model works on 2D or 3D items, not {self.ndim}D")
        if self.ndim == 3 and "Z" not in self.axes:
            raise ValueError(
                f"this model needs a Z axis (3D), but the image axes are {self.axes!r}; "
                "choose a 2D model or set the axes to include Z"
            )
        if self.channels is not None:
            n = self.shape[self.axes.index("C")] if "C" in self.axes else 1
            bad = [c for c in self.channels if not 0 <= c < n]
            if bad or not self.channels:
                raise ValueError(f"channels {list(self.channels)} not in 0..{n - 1}")

    # -- axis bookkeeping -------------------------------------------------
    @property
    def spatial_axes(self) -> str:
        return "ZYX" if self.ndim == 3 else "YX"

    @property
    def loop_axes(self) -> str:
        return "".join(a for a in self.axes if a not in self.spatial_axes + "C")

    def where(self, index: tuple[int, ...]) -> str:
        """The item at ``index`` as people read it: ``"t=3,z=12"`` ("" for a single item)."""
        return ",".join(f"{a.lower()}={i}" for a, i in zip(self.loop_axes, index))

    @property
    def loop_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.loop_axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.spatial_axes)

    @property
    def n_channels(self) -> int:
        if self.channels is not None:
            return len(self.channels)
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def n_items(self) -> int:
        return int(np.prod(self.loop_shape)) if self.loop_shape else 1

    def indices(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(n) for n in self.loop_shape))

    def out_axes(self, channels: bool = False) -> str:
        """Axes of an output: the input's order, without C unless ``channels``."""
        return self._out_axes_with_added_c() if channels else self.axes.replace("C", "")

    def out_shape(self, n_channels: int | None = None) -> tuple[int, ...]:
        """Output shape in the input's order; ``n_channels`` keeps (or adds) C."""
        shape = []
        for a, s in zip(self.axes, self.shape):
            if a == "C":
                if n_channels is not None:
                    shape.append(n_channels)
            else:
                shape.append(s)
        if n_channels is not None and "C" not in self.axes:
            shape.insert(self._c_insert_position(), n_channels)
        return tuple(shape)

    def _c_insert_position(self) -> int:
        # An added channel axis goes before the spatial axes, as ImageJ orders TZCYX.
        return min(self.axes.index(a) for a in self.spatial_axes)

    # -- reading and writing ---------------------------------------------
    def _selection(self, index: tuple[int, ...], axes: str, region: tuple[slice, ...] | None = None) -> tuple:
        where = dict(zip(self.loop_axes, index))
        if region is not None:
            where.update(zip(self.spatial_axes, region))
        return tuple(where.get(a, slice(None)) for a in axes)

    def read(self, array, index: tuple[int, ...], dtype=np.float32, region: tuple[slice, ...] | None = None
             ) -> np.ndarray:
        """The item at ``index`` as ``(C, *spatial)`` of ``dtype`` (None: the array's own).

        Only that item is read; ``region`` (slices over :attr:`spatial_axes`) reads only a part of it.
        """
        block = np.asarray(array[self._selection(index, self.axes, region)])
        kept = [a for a in self.axes if a not in self.loop_axes]
        order = (["C"] if "C" in kept else []) + list(self.spatial_axes)
        block = np.transpose(block, [kept.index(a) for a in order])
        if "C" not in kept:
            block = block[None]
        elif self.channels is not None:
            block = block[list(self.channels)]
        return block if dtype is None else block.astype(dtype, copy=False)

    def write(self, out, index: tuple[int, ...], result: np.ndarray, channels: bool = False,
              region: tuple[slice, ...] | None = None) -> None:
        """Put one item's result (``(*spatial)`` or ``(C, *spatial)``) into ``out`` (at ``region`` of it)."""
        axes = self.out_axes(channels)
        kept = [a for a in axes if a not in self.loop_axes]
        canonical = (["C"] if channels else []) + list(self.spatial_axes)
        result = np.transpose(result, [canonical.index(a) for a in kept])
        out[self._selection(index, axes, region)] = result

    def _out_axes_with_added_c(self) -> str:
        if "C" in self.axes:
            return self.axes
        pos = self._c_insert_position()
        return self.axes[:pos] + "C" + self.axes[pos:]


def drop_axis(values: Sequence[float], axes: str, axis: str = "C") -> tuple[float, ...]:
    """Per-dimension metadata (napari ``scale``/``translate``) without ``axis``."""
    return tuple(v for a, v in zip(axes, values) if a != axis)
