"""Instance labels of an item predicted block by block: one object per object, ids unique and consecutive.

Why overlap matching (as Cellpose's ``distributed_segmentation``) rather than
object-centre ownership (StarDist's ``predict_instances_big``): ownership needs
every object as a centre plus a shape that any block can redraw, which only
StarDist has; the U-Net's watershed and Cellpose's flows produce pixel masks
with no such centre. Matching works on masks from any backend, so there is one
scheme for all of them.

The scheme, in three passes that each can be cut short and resumed:

1. *Predict* (per block, in parallel): labels are predicted on the core + halo.
   The core is written with ids in a range reserved for the block (``number *
   stride + 1 ...``; a core of ``stride`` pixels holds at most ``stride``
   objects) into a raw array; the halo is kept small on disk (compressed, the
   core zeroed, ids consistent with the core's).
2. *Match* (per block, cheap): over every region where this block's halo covers
   a neighbour's core, the halo's objects are compared with the neighbour's raw
   core labels; pairs with IoU >= 0.5 there are the same object. Union-find
   (connected components of the pair graph) gives each object its final id,
   consecutive in the order of the raw ids.
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


def split_block(labels: np.ndarray, core: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """A block's labels (core + halo) -> ``(core ids 1..n, halo ids, n)``.

    Core objects get consecutive ids ``1..n``; in the halo (core zeroed) the same
    objects keep those ids and objects seen only in the halo get ids above ``n``
    (they belong to a neighbour and are never written).
    """
    labels = np.asarray(labels)
    core_ids = np.unique(labels[core])
    core_ids = core_ids[core_ids > 0]
    all_ids = np.unique(labels)
    all_ids = all_ids[all_ids > 0]
    halo_only = np.setdiff1d(all_ids, core_ids, assume_unique=True)
    order = np.concatenate([[0], core_ids, halo_only]).astype(labels.dtype)
    # New id of each label: its position in ``order`` (found through the sorted ids).
    sort = np.argsort(order)
    relabelled = sort.astype(label_dtype(len(order)))[np.searchsorted(order[sort], labels)]
    halo = relabelled.copy()
    halo[core] = 0
    return relabelled[core], halo, len(core_ids)


def raw_ids(local: np.ndarray, number: int, stride: int, dtype) -> np.ndarray:
    """Local ids 1..n -> the block's reserved range (0 stays 0)."""
    local = np.asarray(local)
    base = np.asarray(number * stride, dtype=dtype)
    return np.where(local > 0, local.astype(dtype) + base, 0).astype(dtype)


def match_pairs(halo: np.ndarray, raw: np.ndarray, n_core: int, number: int, stride: int,
                threshold: float = IOU_MATCH) -> np.ndarray:
    """Raw id pairs ``(k, 2)`` of objects that are one: this block's halo vs a neighbour's raw core.

    ``halo`` and ``raw`` cover the same pixels. IoU is taken within them, the part
    of each object both blocks predicted. Halo-only objects (ids above ``n_core``)
    have no raw id and are left out.
    """
    h = np.asarray(halo).ravel().astype(np.uint64)
    r = np.asarray(raw).ravel().astype(np.uint64)
    keep = (h > 0) & (h <= n_core)
    if not keep.any():
        return np.zeros((0, 2), np.uint64)
    h_ids, h_area = np.unique(h[keep], return_counts=True)
    r_ids, r_area = np.unique(r[r > 0], return_counts=True)
    both = keep & (r > 0)
    pairs, inter = np.unique(np.stack([h[both], r[both]], 1), axis=0, return_counts=True)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.uint64)
    ha = h_area[np.searchsorted(h_ids, pairs[:, 0])]
    ra = r_area[np.searchsorted(r_ids, pairs[:, 1])]
    iou = inter / (ha + ra - inter)
    hit = pairs[iou >= threshold]
    return np.stack([hit[:, 0] + np.uint64(number * stride), hit[:, 1]], 1).astype(np.uint64)


@dataclass(frozen=True)
class Relabelling:
    """Final ids of every object of an item: ``final[base[b] + local - 1]`` for block ``b``."""

    final: np.ndarray        # (n objects,) the final id of each raw object
    base: np.ndarray         # (n blocks + 1,) where each block's objects start in ``final``
    n_final: int             # objects after merging
    offset: int = 0          # ids start above this (earlier items of a stack)

    def lut(self, number: int) -> np.ndarray:
        """Local id -> final id for block ``number`` (0 -> 0)."""
        part = self.final[self.base[number]:self.base[number + 1]]
        return np.concatenate([np.zeros(1, self.final.dtype), part])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"final": self.final, "base": self.base, "n_final": np.int64(self.n_final),
                "offset": np.int64(self.offset)}

    @classmethod
    def from_arrays(cls, d) -> Relabelling:
        return cls(d["final"], d["base"], int(d["n_final"]), int(d["offset"]))


def resolve(counts: Sequence[int], stride: int, pairs: np.ndarray, offset: int = 0) -> Relabelling:
    """Union-find over the matched pairs: consecutive final ids ``offset + 1 ...``.

    ``counts[b]``: objects in block ``b``'s core. Components are numbered in the
    order of their smallest raw id, so the result does not depend on the order in
    which blocks finished.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    counts = np.asarray(counts, np.int64)
    base = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(base[-1])
    if n == 0:
        return Relabelling(np.zeros(0, np.uint64), base, 0, offset)
    pairs = np.asarray(pairs, np.uint64).reshape(-1, 2)
    node = _node_index(pairs, base, stride)
    graph = coo_matrix((np.ones(len(node), np.int8), (node[:, 0], node[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # Renumber components by their first node (nodes are in raw-id order).
    first = np.full(comp.max() + 1, n, np.int64)
    np.minimum.at(first, comp, np.arange(n))
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    n_final = int(len(first))
    dtype = label_dtype(offset + n_final)
    return Relabelling((rank[comp] + 1 + offset).astype(dtype), base, n_final, offset)


def _node_index(pairs: np.ndarray, base: np.ndarray, stride: int) -> np.ndarray:
    """Raw ids -> indices in the list of all objects (block by block, local id by local id)."""
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    block = (pairs - np.uint64(1)) // np.uint64(stride)
    local = pairs - block * np.uint64(stride)
    idx = base[block.astype(np.int64)] + local.astype(np.int64) - 1
    if (local.astype(np.int64) > base[block.astype(np.int64) + 1] - base[block.astype(np.int64)]).any():
        raise ValueError("a matched label id lies outside its block's objects; the block state is inconsistent")
    return idx


def relabel(raw: np.ndarray, number: int, stride: int, lut: np.ndarray) -> np.ndarray:
    """A block's raw core ids -> final ids (read from the raw array, so repeating it is harmless)."""
    raw = np.asarray(raw)
    local = np.where(raw > 0, raw - np.asarray(number * stride, raw.dtype), 0).astype(np.int64)
    if local.size and int(local.max()) >= len(lut):
        raise ValueError(f"raw labels of block {number} exceed its recorded objects; the block state is inconsistent")
    return lut[local]


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
