"""The whole item's Cellpose tiles, run for one block of it: seamless blockwise Cellpose.

Why not ``eval`` on the block (as every other backend predicts a block): Cellpose-SAM's
output at a pixel depends on the 256 px tile it is seen in (attention over the whole
tile, absolute position embeddings), and ``eval`` places its tiles by the image's
size (``transforms.get_pad_yx`` padding, then ``make_tiles``' ``linspace`` over the
padded image). A block is tiled differently from the whole image, so its outputs
differ whatever the halo (measured on a 2048 px mosaic with 512 px blocks: matching
AP 0.83 between blockwise and whole-image labels). Here a block runs exactly those
tiles of the whole item's grid that cover the pixels it can get right, and averages
them with Cellpose's own taper (``transforms.average_tiles``), so each such pixel gets
the whole-image flows and probability; Cellpose's flow dynamics then run on that
region. Only the tile *placement* is ours (the arithmetic of ``run_net``/``make_tiles``
redone for one block; Cellpose has no call for "the tiles of an image that cover a
region"); padding, taper, network and dynamics are Cellpose's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ...blocks import Placement


def tile_starts(length: int, bsize: int, overlap: float) -> np.ndarray:
    """Starts of Cellpose's tiles along one axis of an item of ``length`` pixels, in item coordinates.

    Negative starts lie in the zero padding ``run_net`` adds before tiling.
    """
    from cellpose import transforms

    pad1, pad2, _, _ = transforms.get_pad_yx(length, length, min_size=(bsize, bsize))
    padded = length + pad1 + pad2
    overlap = min(0.5, max(0.05, overlap))  # as make_tiles clamps it
    n = 1 if padded <= bsize else int(np.ceil((1.0 + 2 * overlap) * padded / bsize))
    return np.linspace(0, padded - min(bsize, padded), n).astype(int) - pad1


def tiles_held(starts: np.ndarray, bsize: int, length: int, have: tuple[int, int], want: tuple[int, int]) -> bool:
    """Whether every tile over ``want`` (item coordinates) lies in ``have``, the input the block holds.

    A tile is usable when its pixels inside the item are all held (its pixels outside
    the item are Cellpose's zero padding).
    """
    h0, h1 = have
    over = (starts < want[1]) & (starts + bsize > want[0])
    return bool(np.all((np.maximum(starts[over], 0) >= h0) & (np.minimum(starts[over] + bsize, length) <= h1)))


@dataclass(frozen=True)
class BlockTiles:
    """The tiles one block runs: their starts per axis and the region they make exact."""

    starts: tuple[np.ndarray, ...]      # per axis, item coordinates
    region: tuple[tuple[int, int], ...]  # exact outputs, item coordinates
    bsize: int

    @classmethod
    def plan(cls, where: Placement, spatial: tuple[int, ...], bsize: int, overlap: float, margin: int
             ) -> BlockTiles | None:
        """The tiles for a block whose input (of ``spatial`` shape) sits at ``where``: those over its
        core and ``margin`` pixels around it (within the input), where objects crossing the core's
        faces lie whole; None if the input does not hold them all (too small a halo)."""
        region, used = [], []
        for o, n, length, (c0, c1) in zip(where.origin, spatial, where.shape, where.core):
            starts = tile_starts(length, bsize, overlap)
            want = (o + max(0, c0 - margin), o + min(n, c1 + margin))
            if not tiles_held(starts, bsize, length, (o, o + n), want):
                return None
            region.append(want)
            used.append(starts[(starts < want[1]) & (starts + bsize > want[0])])
        return cls(tuple(used), tuple(region), bsize)

    def canvas(self) -> tuple[tuple[int, int], ...]:
        """The item-coordinate box the tiles cover (may reach into the padding)."""
        return tuple((int(s.min()), int(s.max()) + self.bsize) for s in self.starts)

    def inputs(self, x: np.ndarray, origin: tuple[int, ...]) -> np.ndarray:
        """The tiles ``(n, C, bsize, bsize)`` cut from ``x`` ``(C, *spatial)`` held at ``origin``.

        Pixels outside the item are zero, as in Cellpose's padding.
        """
        box = self.canvas()
        canvas = np.zeros((x.shape[0], *(b - a for a, b in box)), np.float32)
        src, dst = [], []
        for (a, b), o, n in zip(box, origin, x.shape[1:]):
            lo, hi = max(a, o), min(b, o + n)
            src.append(slice(lo - o, hi - o))
            dst.append(slice(lo - a, hi - a))
        canvas[(slice(None), *dst)] = x[(slice(None), *src)]
        return np.stack([canvas[(slice(None), *(slice(s - a, s - a + self.bsize) for s, (a, _) in zip(t, box)))]
                         for t in self.origins()])

    def origins(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*(s.tolist() for s in self.starts)))

    def average(self, y: np.ndarray) -> np.ndarray:
        """Tile outputs ``(n, K, bsize, bsize)`` -> ``(K, *region)``, blended with Cellpose's taper."""
        from cellpose import transforms

        box = self.canvas()
        ysub, xsub = ([[t[d] - box[d][0], t[d] - box[d][0] + self.bsize] for t in self.origins()] for d in (0, 1))
        full = transforms.average_tiles(y, ysub, xsub, box[0][1] - box[0][0], box[1][1] - box[1][0])
        return full[(slice(None), *(slice(r0 - a, r1 - a) for (r0, r1), (a, _) in zip(self.region, box)))]


def run_tiles(net, tiles: np.ndarray, batch_size: int) -> np.ndarray:
    """The network on ``tiles`` in batches, as Cellpose's ``run_net`` runs it (its dtype, no grad)."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for j in range(0, len(tiles), batch_size):
            X = torch.from_numpy(tiles[j:j + batch_size]).to(net.device, dtype=net.dtype)
            out.append(net(X)[0].detach().float().cpu().numpy())
    return np.concatenate(out)


def follow_flows_in_item(dP: np.ndarray, inds: tuple[np.ndarray, ...], niter: int, origin: tuple[int, ...],
                         shape: tuple[int, ...], device) -> np.ndarray:
    """Cellpose's flow dynamics (``dynamics.steps_interp``) over a block, in the whole item's frame.

    Why not Cellpose's own call on the block: ``steps_interp`` scales positions by the image's
    size minus one but samples with ``grid_sample(align_corners=False)``, so pixel ``p`` of an
    image of size ``S`` reads the flow at ``p * S / (S - 1) - 0.5``, a stretch that depends on
    the image's size. In a block's frame that point moves by up to half a pixel, and 200 steps
    make different masks from the same flows (measured: 3 to 33 pixels differ in a 300 px crop).
    Here positions are the item's, sampled where the whole item's run samples them: the same
    Euler steps, bilinear sampling with zeros outside (``grid_sample``), clamping to the item.
    ``dP``: the block's flows (already masked and divided by 5, as ``compute_masks`` does);
    ``inds``: the pixels to move, block coordinates. Returns their final places, item coordinates.
    """
    import torch

    size = torch.tensor(shape, dtype=torch.float32, device=device)
    o = torch.tensor(origin, dtype=torch.float32, device=device)
    block = torch.tensor(dP.shape[1:], dtype=torch.float32, device=device)
    im = torch.from_numpy(np.ascontiguousarray(dP[::-1])).to(device, torch.float32)[None]  # x flow first
    p = torch.stack([torch.from_numpy(np.asarray(i)).to(device, torch.float32) for i in inds], -1) + o
    for _ in range(niter):
        at = p * size / (size - 1) - 0.5 - o                   # where the whole item's run samples
        grid = ((2 * at + 1) / block - 1).flip(-1).view(1, 1, -1, 2)
        step = torch.nn.functional.grid_sample(im, grid, align_corners=False)[0, :, 0].T.flip(-1)
        p = torch.minimum(torch.clamp(p + step, min=0), size - 1)
    return p.T.int().cpu().numpy()


def masks_in_item(dP: np.ndarray, cellprob: np.ndarray, origin: tuple[int, ...], shape: tuple[int, ...],
                  niter: int, cellprob_threshold: float, flow_threshold: float, min_size: int,
                  max_size_fraction: float, device) -> np.ndarray:
    """``dynamics.resize_and_compute_masks`` (2D, no resize) for a block, its dynamics in the item's frame.

    The steps of Cellpose's ``compute_masks``, with :func:`follow_flows_in_item` for
    ``follow_flows``; seeds, masks, the flow check and small-mask removal are Cellpose's calls.
    """
    import torch
    from cellpose import dynamics, utils

    fg = cellprob > cellprob_threshold
    if not fg.any():
        return np.zeros(cellprob.shape, np.uint32)
    inds = np.nonzero(fg)
    final = follow_flows_in_item(dP * fg / 5.0, inds, niter, origin, shape, device)
    local = torch.from_numpy(final - np.asarray(origin)[:, None]).to(device, torch.int)
    mask = dynamics.get_masks_torch(local, inds, dP.shape[1:], max_size_fraction=max_size_fraction)
    if mask.max() > 0 and flow_threshold > 0:
        mask = dynamics.remove_bad_flow_masks(mask, dP, threshold=flow_threshold, device=device)
    return utils.fill_holes_and_remove_small_masks(mask, min_size=min_size)
