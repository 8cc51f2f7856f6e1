"""Block geometry for items larger than memory: cores that tile the item, halos around them.

An item's spatial extent is cut into *cores* of a fixed size (a multiple of the
output's chunk size, so parallel writers never share a chunk, and of the model's
stride, so every block sees the pixel grid the whole image would). Each block is
predicted on its core plus a *halo* of context on every side (clipped at the
item's border) and writes only its core.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

Span = tuple[int, int]  # [start, stop) along one spatial dim

# Bytes per pixel of a block's outer region that prediction holds besides the network's
# activations (those are bounded by the tiler): the raw item, its float32 copy, the
# normalised copy and padding, the blended network output, labels and post-processing
# temporaries (watershed, NMS, flows). A measured order of magnitude, not a bound.
BYTES_PER_PIXEL = 160
BYTES_PER_CHANNEL = 16
DEFAULT_MEMORY = 2**30  # per worker


def unet_radius(depth: int, n_conv: int = 2, kernel: int = 3, jump: int = 1) -> int:
    """Receptive radius (input pixels) of a U-Net with ``n_conv`` convolutions per level and 2x pooling.

    ``jump``: input pixels per network pixel (a subsampling stem such as StarDist's grid).
    Encoder and decoder convolutions at level ``l`` each add ``kernel // 2 * 2**l``,
    the bottom ones ``kernel // 2 * 2**depth``, poolings and up-samplings ``2**depth - 1``.
    """
    return int(jump * ((kernel // 2) * n_conv * (3 * 2**depth - 2) + 2**depth - 1))


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // int(multiple)) * int(multiple)


def per_dim(v: int | Sequence[int], nd: int, what: str) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(a) for a in v)
    if len(v) != nd:
        raise ValueError(f"{what} needs {nd} values (one per spatial dimension), got {v}")
    return v


@dataclass(frozen=True)
class Block:
    """One block: its place in the grid, its core and its outer (core + halo) region."""

    index: tuple[int, ...]
    number: int                 # C-order number in the grid
    core: tuple[Span, ...]
    outer: tuple[Span, ...]

    @property
    def key(self) -> str:
        return "-".join(str(i) for i in self.index)

    def core_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.core)

    def outer_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.outer)

    def core_in_outer(self) -> tuple[slice, ...]:
        """The core as slices of an array holding the outer region."""
        return tuple(slice(c0 - o0, c1 - o0) for (c0, c1), (o0, _) in zip(self.core, self.outer))

    def describe(self, axes: str) -> str:
        """``"y 0:512, x 512:1024"``, for messages."""
        return ", ".join(f"{a.lower()} {s}:{e}" for a, (s, e) in zip(axes, self.core))


@dataclass(frozen=True)
class Placement:
    """Where a block's input sits in its item, for models whose outputs depend on it.

    A network that sees the whole image in fixed tiles (Cellpose-SAM's attention over
    each 256 px tile) gives a block's pixels the whole image's outputs only when it
    runs the whole image's tiles; it needs the item's shape and the block's place to
    find them. ``origin``: the input's first pixel in the item; ``shape``: the item's
    spatial shape; ``core``: the part of the input whose outputs are written.
    """

    origin: tuple[int, ...]
    shape: tuple[int, ...]
    core: tuple[Span, ...]

    @classmethod
    def of(cls, block: Block, shape: Sequence[int]) -> Placement:
        core = tuple((s.start, s.stop) for s in block.core_in_outer())
        return cls(tuple(o for o, _ in block.outer), tuple(int(s) for s in shape), core)


_PLACEMENT: ContextVar[Placement | None] = ContextVar("napari_dlbio_placement", default=None)


@contextlib.contextmanager
def placed(where: Placement) -> Iterator[None]:
    """Within the block, :func:`placement` returns ``where`` (a context variable, as
    :func:`napari_dlbio.normalize.item_bounds`: backends read it only if they need it)."""
    token = _PLACEMENT.set(where)
    try:
        yield
    finally:
        _PLACEMENT.reset(token)


def placement() -> Placement | None:
    """The block being predicted (inside :func:`placed`), else None (a whole item)."""
    return _PLACEMENT.get()


def intersect(a: Sequence[Span], b: Sequence[Span]) -> tuple[Span, ...] | None:
    spans = tuple((max(a0, b0), min(a1, b1)) for (a0, a1), (b0, b1) in zip(a, b))
    return spans if all(s < e for s, e in spans) else None


@dataclass(frozen=True)
class BlockGrid:
    """Cores of ``size`` tiling ``shape``, each with ``halo`` of context per side."""

    shape: tuple[int, ...]
    size: tuple[int, ...]
    halo: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.size))

    @property
    def n_blocks(self) -> int:
        return int(np.prod(self.counts))

    def block(self, index: Sequence[int]) -> Block:
        core = tuple((i * b, min((i + 1) * b, s)) for i, b, s in zip(index, self.size, self.shape))
        outer = tuple((max(0, c0 - h), min(s, c1 + h)) for (c0, c1), h, s in zip(core, self.halo, self.shape))
        return Block(tuple(int(i) for i in index), int(np.ravel_multi_index(tuple(index), self.counts)), core, outer)

    def blocks(self) -> list[Block]:
        return [self.block(i) for i in itertools.product(*(range(n) for n in self.counts))]

    def neighbours(self, block: Block) -> list[Block]:
        """The blocks around ``block`` (faces, edges and corners) whose core its halo reaches."""
        out = []
        for step in itertools.product((-1, 0, 1), repeat=len(self.shape)):
            j = tuple(i + s for i, s in zip(block.index, step))
            if any(step) and all(0 <= a < n for a, n in zip(j, self.counts)):
                other = self.block(j)
                if intersect(block.outer, other.core):
                    out.append(other)
        return out


def plan_grid(spatial: Sequence[int], halo: Sequence[int], multiple: Sequence[int], chunks: Sequence[int] | None,
              size: int | Sequence[int] | None, memory_limit: int | None, n_channels: int) -> BlockGrid:
    """The block grid of an item: ``size`` (pixels per core edge) or one from the memory budget.

    Cores are multiples of the output's chunks and the model's ``multiple`` (a given
    size rounded up, one from the budget down, but at least one such multiple);
    halos are rounded up to multiples of ``multiple``.
    """
    nd = len(spatial)
    align = tuple(math.lcm(m, c) for m, c in zip(multiple, chunks or (1,) * nd))
    halo = tuple(round_up(h, m) for h, m in zip(halo, multiple))
    if size is None:
        core = _size_for_memory(spatial, halo, align, memory_limit or DEFAULT_MEMORY, n_channels)
    else:
        core = per_dim(size, nd, "the block size")
        if min(core) < 1:
            raise ValueError(f"the block size must be at least 1 pixel, got {size}")
    core = tuple(min(round_up(c, a), round_up(s, a)) for c, a, s in zip(core, align, spatial))
    return BlockGrid(tuple(int(s) for s in spatial), core, halo)


def _size_for_memory(spatial: Sequence[int], halo: Sequence[int], align: Sequence[int], limit: int,
                     n_channels: int) -> tuple[int, ...]:
    """Core edges (multiples of ``align``) whose outer regions hold about ``limit`` bytes.

    Dims whose whole extent fits are taken whole; dims whose share would fall below
    one ``align`` get one ``align`` (the outputs' chunks allow no less), and the
    others share what is left.
    """
    nd = len(spatial)
    pixels = limit / (BYTES_PER_PIXEL + BYTES_PER_CHANNEL * n_channels)
    fixed: dict[int, int] = {}  # dim -> outer edge
    while True:
        free = sorted((d for d in range(nd) if d not in fixed), key=lambda d: spatial[d])
        edges = dict(fixed)
        for k, d in enumerate(free):
            room = pixels / np.prod([edges[e] for e in edges] or [1])
            edges[d] = int(min(spatial[d] + 2 * halo[d], room ** (1 / (len(free) - k))))
        small = [d for d in free if edges[d] - 2 * halo[d] < align[d]]
        if not small:
            break
        for d in small:
            fixed[d] = min(align[d], round_up(spatial[d], align[d])) + 2 * halo[d]
    return tuple(max(a, (edges[d] - 2 * halo[d]) // a * a) for d, a in zip(range(nd), align))
