"""Instance labels of an item predicted block by block: one object per object, ids unique and consecutive.

Why overlap matching (as Cellpose's ``distributed_segmentation``) rather than
object-centre ownership (StarDist's ``predict_instances_big``): ownership needs
every object as a centre plus a shape that any block can redraw, which only
StarDist has; the U-Net's watershed and Cellpose's flows produce pixel masks
with no such centre. Matching works on masks from any backend, so there is one
scheme for all of them.

The scheme, in three passes that each can be cut short and resumed:

1. *Predict* (per block, in parallel): labels are predicted on the core + halo.
   Each object of the core gets a *raw id*: 1 + the flat index (in the item) of
   its first core pixel. A block owns the ids of its core's pixels, so ids are
   unique over the item without any coordination between blocks, and never
   exceed the item's pixel count (which fixes the output's dtype up front). The
   core's raw ids go into a raw array; the halo is kept small on disk
   (compressed, the core zeroed, ids consistent with the core's).
2. *Match* (per block, cheap): over every region where this block's halo covers
   a neighbour's core, the halo's objects are compared with the neighbour's raw
   core labels; pairs with IoU >= 0.5 there are the same object. Union-find
   (connected components of the pair graph) gives each object its final id,
   consecutive in the order of the raw ids (so independent of which block
   finished first).
3. *Relabel* (per block, in parallel): the raw core is read and written with its
   final ids into the output, so the pass is idempotent: a block relabelled twice
   (after an interruption) gets the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU_MATCH = 0.5


def label_dtype(max_id: int) -> np.dtype:
    """uint32, or uint64 when ids may exceed it."""
    return np.dtype(np.uint32) if max_id <= np.iinfo(np.uint32).max else np.dtype(np.uint64)


def split_block(labels: np.ndarray, core: tuple[slice, ...], origin: Sequence[int], shape: Sequence[int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block's labels (core + halo) -> ``(core local ids 1..n, halo local ids, raw ids (n,))``.

    ``core``: the core within ``labels``; ``origin``: the core's first pixel in the
    item of spatial ``shape``. Core objects are numbered ``1..n`` in the order of
    their raw ids (``raw[j - 1]`` is object ``j``'s); in the halo (core zeroed) the
    same objects keep those numbers and objects seen only in the halo get numbers
    above ``n`` (they belong to a neighbour and are never written).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind != "i":
        labels = labels.astype(np.int64)  # unsigned or bool labels: one signed type for the lookups
    values, first = np.unique(labels[core].ravel(), return_index=True)
    first, values = first[values > 0], values[values > 0]
    pixel = np.unravel_index(first, labels[core].shape)
    raw = np.ravel_multi_index(tuple(p + o for p, o in zip(pixel, origin)), tuple(shape)).astype(np.int64) + 1
    by_raw = np.argsort(raw)
    core_ids, raw = values[by_raw], raw[by_raw]
    present = _present(labels)
    halo_only = np.setdiff1d(present[present > 0], core_ids, assume_unique=True)
    order = np.concatenate([[0], core_ids, halo_only]).astype(np.int64)
    local = _renumber(labels, order)
    halo = local.copy()
    halo[core] = 0
    return local[core], halo, raw


def _present(labels: np.ndarray) -> np.ndarray:
    """The distinct values of non-negative ``labels`` (a count per value when they are few)."""
    top = int(labels.max()) if labels.size else 0
    if labels.size and labels.min() >= 0 and top < 4 * labels.size:
        return np.flatnonzero(np.bincount(labels.ravel(), minlength=top + 1))
    return np.unique(labels)


def _renumber(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Value ``order[k]`` -> ``k`` (a lookup table when the values are small, as models' labels are)."""
    dtype = label_dtype(len(order))
    top = int(order.max()) if len(order) else 0
    if labels.min() >= 0 and top < 4 * labels.size:
        lut = np.zeros(top + 1, dtype)
        lut[order] = np.arange(len(order), dtype=dtype)
        return lut[labels]
    sort = np.argsort(order)
    return sort.astype(dtype)[np.searchsorted(order[sort], labels)]


def raw_labels(local: np.ndarray, raw: np.ndarray, dtype) -> np.ndarray:
    """Local numbers 1..n -> raw ids (0 stays 0)."""
    return np.concatenate([[0], raw]).astype(dtype)[np.asarray(local)]


def match_pairs(halo: np.ndarray, raw: np.ndarray, ids: np.ndarray, threshold: float = IOU_MATCH) -> np.ndarray:
    """Raw id pairs ``(k, 2)`` of objects that are one: this block's halo vs a neighbour's raw core.

    ``halo`` (this block's local numbers) and ``raw`` (the neighbour's raw ids) cover
    the same pixels; ``ids``: this block's raw ids by local number. IoU is taken
    within those pixels, the part of each object both blocks predicted. Halo-only
    objects (numbers above ``len(ids)``) have no raw id and are left out.
    """
    h = np.asarray(halo).ravel().astype(np.int64)
    r = np.asarray(raw).ravel().astype(np.int64)
    keep = (h > 0) & (h <= len(ids))
    both = keep & (r > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    h_area = np.bincount(h[keep], minlength=len(ids) + 1)
    r_ids, r_area = np.unique(r[r > 0], return_counts=True)
    # One int64 key per (halo number, neighbour id): numbers are at most a block's pixels.
    key, inter = np.unique(r[both] * (len(ids) + 1) + h[both], return_counts=True)
    pairs = np.stack([key % (len(ids) + 1), key // (len(ids) + 1)], 1)
    union = h_area[pairs[:, 0]] + r_area[np.searchsorted(r_ids, pairs[:, 1])] - inter
    hit = pairs[inter / union >= threshold]
    return np.stack([np.asarray(ids, np.int64)[hit[:, 0] - 1], hit[:, 1]], 1)


@dataclass(frozen=True)
class Relabelling:
    """Final ids of every object of an item, block by block: ``final[k]`` for raw id ``ids[k]``."""

    ids: np.ndarray          # raw ids, block after block (sorted within each block)
    final: np.ndarray        # the final id of each
    base: np.ndarray         # (n blocks + 1,) where each block's objects start
    n_final: int             # objects after merging
    offset: int = 0          # ids start above this (earlier items of a stack)

    def lut(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``number``'s raw ids and their final ids."""
        part = slice(self.base[number], self.base[number + 1])
        return self.ids[part], self.final[part]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "final": self.final, "base": self.base, "n_final": np.int64(self.n_final),
                "offset": np.int64(self.offset)}

    @classmethod
    def from_arrays(cls, d) -> Relabelling:
        return cls(d["ids"], d["final"], d["base"], int(d["n_final"]), int(d["offset"]))


def resolve(ids: Sequence[np.ndarray], pairs: np.ndarray, offset: int = 0) -> Relabelling:
    """Union-find over the matched pairs: consecutive final ids ``offset + 1 ...``.

    ``ids[b]``: the raw ids of block ``b``'s core objects. Components are numbered
    in the order of their smallest raw id, so the result does not depend on the
    order in which blocks finished.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    base = np.concatenate([[0], np.cumsum([len(i) for i in ids])]).astype(np.int64)
    flat = np.concatenate([np.asarray(i, np.int64) for i in ids]) if len(ids) else np.zeros(0, np.int64)
    n = len(flat)
    if n == 0:
        return Relabelling(flat, np.zeros(0, np.uint32), base, 0, offset)
    by_id = np.argsort(flat)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    pos = np.searchsorted(flat[by_id], pairs)
    if (pos >= n).any() or (flat[by_id][np.minimum(pos, n - 1)] != pairs).any():
        raise ValueError("a matched label id is not among the blocks' objects; the block state is inconsistent")
    node = by_id[pos]
    graph = coo_matrix((np.ones(len(node), np.int8), (node[:, 0], node[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # Components numbered by their smallest raw id.
    first = np.full(comp.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, comp, flat)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    dtype = label_dtype(offset + len(first))
    return Relabelling(flat, (rank[comp] + 1 + offset).astype(dtype), base, len(first), offset)


def relabel(raw: np.ndarray, ids: np.ndarray, final: np.ndarray) -> np.ndarray:
    """A block's raw core ids -> final ids (read from the raw array, so repeating it is harmless)."""
    raw = np.asarray(raw)
    if len(ids) == 0:
        if raw.any():
            raise ValueError("a block's raw labels hold objects it did not record; the block state is inconsistent")
        return np.zeros(raw.shape, final.dtype)
    out = np.zeros(raw.shape, final.dtype)
    fg = raw > 0
    values = raw[fg]
    pos = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
    if (ids[pos] != values).any():
        raise ValueError("a block's raw labels hold objects it did not record; the block state is inconsistent")
    out[fg] = final[pos]
    return out


def count_cut_objects(labels: np.ndarray, block: int | Sequence[int], min_run: int = 8) -> int:
    """Objects whose outline follows a block line for ``min_run`` pixels or more.

    A line between blocks runs between pixel rows (or columns, planes) ``k*block - 1``
    and ``k*block``. An object is *cut* there if, along ``min_run`` consecutive pixels
    of the line, it lies on one side and not on the other: one half of an object split
    in two, or an object truncated at the line. Objects of a whole-image prediction
    rarely have such straight edges, so the count measures the seams.
    """
    labels = np.asarray(labels)
    sizes = (block,) * labels.ndim if isinstance(block, (int, np.integer)) else tuple(block)
    cut: set[int] = set()
    for axis, size in enumerate(sizes):
        for k in range(size, labels.shape[axis], size):
            a = np.take(labels, k - 1, axis=axis)
            b = np.take(labels, k, axis=axis)
            for side, other in ((a, b), (b, a)):
                cut |= _runs(np.where((side > 0) & (side != other), side, 0), min_run)
    return len(cut)


def _runs(edge: np.ndarray, min_run: int) -> set[int]:
    """Ids forming ``min_run`` consecutive equal pixels along any axis of ``edge`` (a line or a plane)."""
    found: set[int] = set()
    for axis in range(edge.ndim):
        e = np.moveaxis(edge, axis, -1).reshape(-1, edge.shape[axis])
        for row in e:
            if not row.any():
                continue
            change = np.flatnonzero(np.diff(row)) + 1
            starts = np.concatenate([[0], change])
            lengths = np.diff(np.concatenate([starts, [len(row)]]))
            vals = row[starts]
            found |= {int(v) for v, n in zip(vals, lengths) if v > 0 and n >= min_run}
    return found
