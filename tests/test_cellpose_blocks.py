"""Seamless blockwise Cellpose: a block runs the whole image's Cellpose tiles (backends/cellpose/grid.py).

Cellpose-SAM's outputs depend on where its 256 px tiles fall, so a block predicted on
its own differs from the whole image inside its core. The first test shows that with
the micro Cellpose-SAM network (attention over each tile, as cpsam) and checks that a
block placed in its item gets the whole image's flows and probability exactly. A
random network segments noise, so the labels test uses a stand-in network with
CPSAM's interface whose flows point to the centres of bright blobs.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cellpose")

from _blocks import consecutive  # noqa: E402

from napari_dlbio.blocks import BlockGrid, Placement, placed  # noqa: E402
from napari_dlbio.samples import nuclei_2d  # noqa: E402
from napari_dlbio.seams import blockwise_agreement  # noqa: E402

SHAPE = (600, 840)  # not multiples of 16 or of the tile: Cellpose pads and spreads its tiles


@pytest.fixture(scope="module")
def cp():
    from napari_dlbio.backends import cellpose as cpb

    return cpb


@pytest.fixture(scope="module")
def micro(cp, tmp_path_factory):
    return cp.BACKEND.pretrained(str(cp.write_random_model(tmp_path_factory.mktemp("cp") / "micro", cp.MICRO, seed=0)))


def _image(shape=SHAPE, seed=99) -> np.ndarray:
    img = nuclei_2d(shape, seed=seed, radius=(5.0, 9.0))[0].astype(np.float32)
    return (img - img.min()) / np.ptp(img)


def _block(model, settings, x: np.ndarray, block, placed_in: tuple | None) -> dict:
    part = x[(slice(None), *block.outer_slices())]
    if placed_in is None:
        return model.predict(part, settings)
    with placed(Placement.of(block, placed_in)):
        return model.predict(part, settings)


def test_a_block_gets_the_whole_images_network_outputs(cp, micro):
    # No pixel above the threshold: the flow dynamics of a random network's noise would cost a minute.
    s = cp.Predict(bfloat16=False, device="cpu", return_flows=True, normalization={"mode": "none"},
                   cellprob_threshold=12.0)
    x = np.stack([_image(), _image(seed=5)])                   # two channels
    whole = micro.predict(x, s)
    grid = BlockGrid(SHAPE, (256, 256), (micro.block_needs(s).halo,) * 2)
    assert grid.halo == (64 + 256,) * 2                        # two diameters and one Cellpose tile
    for index in [(0, 0), (1, 1), (2, 3)]:                     # a corner, the middle, the far corner
        b = grid.block(index)
        core = (slice(None), *b.core_in_outer())
        res = _block(micro, s, x, b, SHAPE)
        for name in ("flows", "cellprob"):
            want = whole[name][(Ellipsis, *b.core_slices())]
            np.testing.assert_allclose(res[name][core[-want.ndim:]], want, atol=1e-5, err_msg=f"{name} {index}")
    # What it fixes: the middle block predicted on its own is tiled differently.
    b = grid.block((1, 1))
    alone = _block(micro, s, x, b, None)["cellprob"][b.core_in_outer()]
    assert np.abs(alone - whole["cellprob"][b.core_slices()]).mean() > 1e-2


class BlobFlows(torch.nn.Module):
    """A stand-in for a trained Cellpose network (CPSAM's interface: ``net(x) -> (y, style)``).

    Flows of length 5 up the gradient of the smoothed image (towards the centres of
    bright blobs) and a cell probability logit from the intensity, so Cellpose's flow
    dynamics find the blobs; its convolutions see each tile's zero padding, so its
    outputs too depend on where tiles fall.
    """

    def __init__(self, sigma: float = 3.0) -> None:
        super().__init__()
        self.device, self.dtype = torch.device("cpu"), torch.float32
        r = torch.arange(-9, 10, dtype=torch.float32)
        g = torch.exp(-r**2 / (2 * sigma**2))
        self.register_buffer("g", g / g.sum())

    def forward(self, x):
        f = torch.nn.functional
        img = x[:, :1]
        sm = f.conv2d(img, self.g.view(1, 1, -1, 1), padding=(9, 0))
        sm = f.conv2d(sm, self.g.view(1, 1, 1, -1), padding=(0, 9))
        dy = f.pad(sm[..., 2:, :] - sm[..., :-2, :], (0, 0, 1, 1))
        dx = f.pad(sm[..., :, 2:] - sm[..., :, :-2], (1, 1, 0, 0))
        norm = torch.sqrt(dy**2 + dx**2) + 1e-6
        y = torch.cat([5 * dy / norm, 5 * dx / norm, 20 * (img - 0.5)], dim=1)
        return y, torch.zeros(len(x), 256)


@pytest.fixture
def blob_model(cp, micro):
    net = micro.cellpose_model.net
    micro.cellpose_model.net = BlobFlows()
    yield micro
    micro.cellpose_model.net = net


def test_cellpose_blockwise_labels_are_seamless(cp, blob_model):
    img = _image((512, 512))
    s = cp.Predict(bfloat16=False, device="cpu", flow_threshold=0.0)
    res = blockwise_agreement(blob_model, img, 128, s)
    whole, blocks = res["labels"]
    assert res["n_whole"] > 300                                  # the blobs are found
    # 1.000 measured: the same flows (test above) and the same dynamics (in the item's frame)
    assert res["ap"] >= 0.99, {k: v for k, v in res.items() if k != "labels"}
    assert res["cut_blocks"] <= res["cut_whole"] and abs(res["n_blocks"] - res["n_whole"]) <= 1
    # Pixels of an object differ only where float rounding tips a pixel's path (a few of 40 000).
    assert ((whole > 0) != (blocks > 0)).sum() <= 0.002 * (whole > 0).sum()
    assert blocks.dtype == np.uint32 and consecutive(blocks)


def test_too_small_an_overlap_falls_back_to_the_block_alone(cp, blob_model, caplog):
    img = _image((512, 512))
    s = cp.Predict(bfloat16=False, device="cpu", flow_threshold=0.0)
    from napari_dlbio import tasks

    with caplog.at_level(logging.WARNING, logger="napari_dlbio.backends.cellpose.model"):
        lab = tasks.predict(blob_model, img, settings=s, block_size=256, overlap=32).outputs["labels"]
    assert "overlap too small" in caplog.text
    assert lab.shape == img.shape and lab.dtype == np.uint32 and lab.max() > 300


@pytest.mark.parametrize("length", [100, 240, 256, 300, 700, 1000, 2048])
@pytest.mark.parametrize("overlap", [0.1, 0.3])
def test_tile_starts_are_cellposes(length, overlap):
    """Our tile placement is run_net's: get_pad_yx's padding, then make_tiles' starts."""
    from cellpose import transforms

    from napari_dlbio.backends.cellpose.grid import tile_starts

    pad1, pad2, _, _ = transforms.get_pad_yx(length, 64, min_size=(256, 256))
    padded = np.zeros((1, length + pad1 + pad2, 256), np.float32)
    _, ysub, _, _, _ = transforms.make_tiles(padded, bsize=256, tile_overlap=overlap)
    starts = sorted({int(y[0]) - pad1 for y in ysub})
    assert tile_starts(length, 256, overlap).tolist() == starts


def test_tile_overlaps_cellpose_cannot_run_are_refused(cp, micro):
    """Below 0.05 Cellpose's run_net and make_tiles count tiles differently (a 480 px image failed)."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="tile_overlap"):
        cp.Predict(tile_overlap=0.01)
    x = np.random.default_rng(0).random((1, 480, 480), dtype=np.float32)
    res = micro.predict(x, cp.Predict(bfloat16=False, device="cpu", tile_overlap=0.05, cellprob_threshold=12.0))
    assert res["labels"].shape == (480, 480)
