"""Tiled prediction with overlap and seamless blending.

A network is applied to overlapping tiles of a ``(C, *spatial)`` item and the
outputs are blended with weights that ramp down across the overlap, so large
images fit in memory and no seam shows. Outputs may be subsampled (StarDist's
grid): tile positions then stay on multiples of the grid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .jobs import JobContext

NetFn = Callable[[np.ndarray], np.ndarray]  # (B, C, *tile) -> (B, K, *tile/grid)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the out-of-memory errors of torch (CUDA/MPS) and numpy."""
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "outofmemory" in text


def _starts(size: int, tile: int, overlap: int, step_multiple: int) -> list[int]:
    if tile >= size:
        return [0]
    step = max(step_multiple, (tile - overlap) // step_multiple * step_multiple)
    starts = list(range(0, size - tile, step))
    last = (size - tile) // step_multiple * step_multiple
    if not starts or starts[-1] != last:
        starts.append(last)
    return starts


def _ramp(n: int, overlap: int, left: bool, right: bool, margin: int = 0) -> np.ndarray:
    """Blending weights of one tile along one axis: 0 within ``margin`` of an inner edge, then a
    linear ramp over the rest of the overlap (the neighbour's ramp sums with it to 1), then 1."""
    w = np.ones(n, np.float32)
    k = min(overlap, n // 2)
    m = min(margin, k // 2)
    if k > 0:
        r = np.zeros(k, np.float32)
        r[m : k - m] = np.arange(1, k - 2 * m + 1, dtype=np.float32) / (k - 2 * m + 1)
        r[k - m :] = 1.0
        if left:
            w[:k] = r
        if right:
            w[n - k :] = r[::-1]
    return w


def predict_tiled(
    fn: NetFn,
    item: np.ndarray,
    n_out: int,
    tile: int | Sequence[int] | None = None,
    overlap: int | Sequence[int] = 32,
    multiple: int | Sequence[int] = 1,
    grid: int | Sequence[int] = 1,
    batch_size: int = 4,
    ctx: JobContext | None = None,
    pad_mode: str = "reflect",
    margin: int | Sequence[int] = 0,
) -> np.ndarray:
    """Apply ``fn`` to tiles of ``item`` (C, *spatial) and blend into (n_out, *spatial/grid).

    ``multiple``: each tile's size must be divisible by it (U-Net depth).
    ``grid``: output subsampling; spatial sizes must then be divisible by it.
    ``tile=None`` processes the whole (padded) item as one tile.
    ``margin``: the network's receptive radius (input pixels). Outputs that close to a
    tile's inner edge saw the tile's padding instead of the image, so they get no weight
    and tiles overlap by at least twice the margin: a convolutional network's tiled
    output then equals its one-tile output (float rounding aside), which restoration
    needs (a plain ramp over a short overlap leaves ~1% seams).
    """
    ctx = ctx or JobContext()
    spatial = item.shape[1:]
    g = _Geometry.of(spatial, tile, overlap, multiple, grid, margin)
    pad = [(0, 0)] + [(0, p - s) for p, s in zip(g.padded, spatial)]
    x = np.pad(item, pad, mode=pad_mode if all(s > 1 for s in spatial) else "edge")
    acc = np.zeros((n_out,) + tuple(p // k for p, k in zip(g.padded, g.grid)), np.float32)
    wsum = np.zeros(acc.shape[1:], np.float32)
    positions = g.positions()
    total = len(positions)
    for b in range(0, total, batch_size):
        ctx.check()
        chunk = positions[b : b + batch_size]
        batch = np.stack([x[(slice(None),) + tuple(slice(s, s + t) for s, t in zip(pos, g.tiles))]
                          for pos in chunk])
        pred = np.asarray(fn(batch), dtype=np.float32)
        for pos, p in zip(chunk, pred):
            w = _window(pos, g.tiles, g.padded, g.overlap, g.grid, g.margin)
            sl = tuple(slice(s // k, (s + t) // k) for s, t, k in zip(pos, g.tiles, g.grid))
            acc[(slice(None),) + sl] += p * w
            wsum[sl] += w
        ctx.report(min(b + batch_size, total), total, f"tile {min(b + batch_size, total)}/{total}")
    acc /= np.maximum(wsum, 1e-8)
    crop = tuple(slice(0, math.ceil(s / k)) for s, k in zip(spatial, g.grid))
    return acc[(slice(None),) + crop]


@dataclass(frozen=True)
class _Geometry:
    """Per axis: padded size, tile edge, overlap, margin, output grid and tile-origin multiple."""

    padded: tuple[int, ...]
    tiles: tuple[int, ...]
    overlap: tuple[int, ...]
    margin: tuple[int, ...]
    grid: tuple[int, ...]
    mult: tuple[int, ...]

    @classmethod
    def of(cls, spatial, tile, overlap, multiple, grid, margin) -> _Geometry:
        nd = len(spatial)
        grid = _per_dim(grid, nd)
        mult = tuple(math.lcm(m, g) for m, g in zip(_per_dim(multiple, nd), grid))
        padded = tuple(max(m, math.ceil(s / m) * m) for s, m in zip(spatial, mult))
        tiles = padded if tile is None else tuple(
            min(p, max(m, int(t) // m * m)) for p, t, m in zip(padded, _per_dim(tile, nd), mult))
        # At most a quarter tile of margin, on the output grid; overlaps hold two margins.
        margin = tuple(min(-(-m // g) * g, t // 4 // g * g) for m, t, g in zip(_per_dim(margin, nd), tiles, grid))
        ov = tuple(max(o, 2 * m) for o, m in zip(_per_dim(overlap, nd), margin))
        return cls(padded, tiles, ov, margin, grid, mult)

    def positions(self) -> list[tuple[int, ...]]:
        # Tile origins on the pooling grid too: a U-Net is shift-equivariant only by its multiple.
        starts = [_starts(p, t, o, m) for p, t, o, m in zip(self.padded, self.tiles, self.overlap, self.mult)]
        return list(itertools.product(*starts))


def _window(pos, tiles, padded, overlap, grid, margin) -> np.ndarray:
    parts = []
    for s, t, p, o, g, m in zip(pos, tiles, padded, overlap, grid, margin):
        parts.append(_ramp(t // g, o // g, left=s > 0, right=s + t < p, margin=m // g))
    w = parts[0]
    for q in parts[1:]:
        w = np.multiply.outer(w, q)
    return w


def _per_dim(v: int | Sequence[int] | None, nd: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(a) for a in v)
    if len(v) != nd:
        raise ValueError(f"expected {nd} values, got {v}")
    return v


def with_oom_retry(run: Callable[[int | None, int], np.ndarray], tile: int | None, batch_size: int,
                   min_tile: int = 64) -> np.ndarray:
    """Call ``run(tile, batch)``; on out-of-memory halve batch, then tile, then give up clearly."""
    while True:
        try:
            return run(tile, batch_size)
        except Exception as exc:  # noqa: BLE001 - only OOM is retried, the rest re-raised
            if not is_out_of_memory(exc):
                raise
            _free_accelerator_memory()
            if batch_size > 1:
                batch_size //= 2
            elif tile is None or tile > min_tile:
                tile = 512 if tile is None else tile // 2
            else:
                raise MemoryError(
                    f"out of memory even with {min_tile}px tiles and batch size 1; "
                    "use the CPU device or a smaller model"
                ) from exc


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
