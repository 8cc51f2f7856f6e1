"""Blockwise prediction with real (small, quickly trained) networks: seams, image outputs, resume.

Each backend's blockwise result is compared with its whole-image prediction of an
image that fits in memory: labels must match at AP@0.5 >= 0.98 with no more objects
cut along block lines than the whole image has; N2V's image within 1e-3 of its range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _blocks import Counting, cancel_after, consecutive, same_up_to_renumbering  # noqa: E402
from napari_dlbio import data, tasks  # noqa: E402
from napari_dlbio.backends import get  # noqa: E402
from napari_dlbio.seams import blockwise_agreement  # noqa: E402
from napari_dlbio.jobs import JobContext  # noqa: E402
from napari_dlbio.samples import nuclei_2d  # noqa: E402

UNET = dict(depth=2, base_width=8, patch_size=64, batch_size=4, learning_rate=5e-3, epochs=12,
            steps_per_epoch=10, val_patches=4, mixed_precision=False, val_fraction=0.25)


def _train_pairs(n=4, size=96):
    pairs = [nuclei_2d((size, size), seed=i, radius=(5.0, 9.0)) for i in range(n)]
    return data.from_arrays(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), axes="ZYX")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return tasks.train("unet", _train_pairs(), get("unet").Settings(**UNET), None, JobContext()).model


@pytest.fixture(scope="module")
def image():
    """512 x 512 synthetic nuclei (about 460 objects, many crossing 128 px block lines)."""
    return nuclei_2d((512, 512), seed=99, radius=(5.0, 9.0))[0]


def _check_seamless(res: dict) -> None:
    whole, blocks = res["labels"]
    assert res["ap"] >= 0.98, res
    assert res["cut_blocks"] <= res["cut_whole"], res
    assert abs(res["n_blocks"] - res["n_whole"]) <= 0.02 * res["n_whole"]
    assert blocks.dtype == np.uint32 and consecutive(blocks)


def test_unet_blockwise_matches_whole_image(unet, image):
    res = blockwise_agreement(unet, image, 128, get("unet").Predict(device="cpu"))
    _check_seamless(res)
    assert res["n_whole"] > 300


def test_stardist_blockwise_matches_whole_image(image):
    pytest.importorskip("stardist")
    be = get("stardist")
    s = be.Settings(n_rays=16, width=8, depth=2, features=16, patch_size=64, epochs=6, steps_per_epoch=10,
                    batch_size=4, learning_rate=3e-3, seed=0, device="cpu", val_fraction=0.25)
    model = tasks.train("stardist", _train_pairs(size=128), s, None, JobContext()).model
    assert model.block_needs(None).multiple == (8, 8)   # grid 2 x 2**depth
    res = blockwise_agreement(model, image, 128, be.Predict(device="cpu"))
    _check_seamless(res)
    assert res["n_whole"] > 300


def test_n2v_blockwise_equals_whole_image(monkeypatch, tmp_path, image):
    pytest.importorskip("careamics")
    be = get("n2v")
    rng = np.random.default_rng(0)
    noisy = (rng.poisson(np.clip(image, 0, None) + 5.0) + rng.normal(0, 2, image.shape)).astype(np.float32)
    monkeypatch.chdir(tmp_path)  # CAREamics may write logs to the working directory
    s = be.Settings(epochs=2, steps_per_epoch=10, val_fraction=0.3, patch_size=32, batch_size=8,
                    base_filters=16, learning_rate=2e-3, masked_percent=2.0)
    model = tasks.train("n2v", data.from_arrays(noisy[:128, :128], None, "YX", 2), s, None, JobContext()).model
    res = blockwise_agreement(model, noisy, 128, be.Predict(device="cpu", tta=False))
    assert res["relative"] <= 1e-3, res
    # Whole-image prediction in tiles (what large images get) equals it in one tile too.
    one = model.predict(noisy[None], be.Predict(device="cpu", tta=False))["image"]
    tiled = model.predict(noisy[None], be.Predict(device="cpu", tta=False, tile_size=256))["image"]
    assert np.abs(tiled - one).max() <= 1e-4 * (one.max() - one.min())


def test_cellpose_blocks_use_the_whole_images_normalisation(tmp_path, image):
    cp = pytest.importorskip("napari_dlbio.backends.cellpose")
    pytest.importorskip("cellpose")
    from napari_dlbio.backends.cellpose.inputs import prepare_input
    from napari_dlbio.normalize import bounds_key, item_bounds

    model = cp.BACKEND.pretrained(str(cp.write_random_model(tmp_path / "micro", cp.MICRO, seed=0)))
    s = cp.Predict(cellprob_threshold=-6.0, flow_threshold=0.0, min_size=3, bfloat16=False, device="cpu")
    (norm,) = model.normalizations(s)
    x = image[None, :64, :64].astype(np.float32)
    with item_bounds({bounds_key(norm): (np.array([10.0], np.float32), np.array([5.0], np.float32))}):
        y, params = prepare_input(x, norm)
    assert not params["normalize"] and np.allclose(y, (x - 10) / 5)  # the given bounds, Cellpose's off
    # A random network segments noise, so only the stitching's invariants are checked here.
    lab = tasks.predict(model, image, settings=s, block_size=256).outputs["labels"]
    assert lab.dtype == np.uint32 and consecutive(lab) and lab.max() > 100


@dataclass(frozen=True)
class LazySource:
    """An ``ngff.ImageSource`` stand-in: plain data that opens as a lazy zarr array."""

    path: str
    kind: str = "zarr"

    def open(self):
        import zarr

        return zarr.open_array(self.path, mode="r")


def test_resume_computes_only_the_remaining_blocks(unet, image, tmp_path):
    import zarr

    img = image[:384, :384]
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=img.shape, chunks=(128, 128), dtype=img.dtype)
    src[:] = img
    s = get("unet").Predict(device="cpu", probabilities=True)
    source = LazySource(str(tmp_path / "in.zarr"))
    full = tasks.predict(unet, src, settings=s, out=tasks.zarr_outputs(tmp_path / "full", 128), block_size=128,
                         image_source=source)
    assert not full.cancelled and full.n_items == 1
    in_memory = tasks.predict(unet, img, settings=s, block_size=128).outputs["labels"]
    np.testing.assert_array_equal(full.outputs["labels"][:], in_memory)

    first = tasks.predict(unet, src, settings=s, ctx=cancel_after("block 3/9"),
                          out=tasks.zarr_outputs(tmp_path / "cut", 128), block_size=128, image_source=source)
    assert first.cancelled and first.n_items == 0
    done = sorted(p.name for p in (tmp_path / "cut" / ".dlbio" / "predict").iterdir())
    assert done == ["0-0", "0-1", "0-2"]                # finished blocks stay, with their markers
    partial = zarr.open_array(str(tmp_path / "cut" / "labels.zarr"))[:]
    assert partial[:128].any() and not partial[128:].any()

    with pytest.raises(ValueError, match=r"block: 128x128 then, 256x256 now"):
        tasks.predict(unet, src, settings=s, out=tasks.zarr_outputs(tmp_path / "cut", 128, resume=True),
                      block_size=256, resume=True)
    runner = Counting()
    again = tasks.predict(unet, src, settings=s, out=tasks.zarr_outputs(tmp_path / "cut", 128, resume=True),
                          block_size=128, resume=True, runner=runner, image_source=source)
    assert runner.predicted == 6 and not again.cancelled
    for name in ("labels", "probability"):
        np.testing.assert_array_equal(again.outputs[name][:], full.outputs[name][:])


def test_small_items_are_predicted_whole_as_before(unet, tmp_path):
    img = nuclei_2d((96, 96), seed=5, radius=(5.0, 9.0))[0]
    res = tasks.predict(unet, img, out=tasks.zarr_outputs(tmp_path / "o"))
    assert res.outputs["labels"].dtype == np.int32       # item-wise, unchanged
    assert not (tmp_path / "o" / ".dlbio").exists()
    whole = tasks.predict(unet, img).outputs["labels"]
    assert same_up_to_renumbering(whole, res.outputs["labels"][:])


def _dsb_mosaic(shared_data):
    from napari_dlbio.samples import mosaic

    val = shared_data / "dsb2018" / "val"
    pairs = [(data.read_image(p), data.read_image(val / "masks" / p.name))
             for p in sorted((val / "images").glob("*.tif"))]
    return mosaic(pairs, 2048)[0]


@pytest.mark.slow
def test_dsb_mosaic_stardist_512_px_blocks(shared_data):
    """The issue's check on real nuclei: a 2048 x 2048 dsb2018 mosaic, the official StarDist DSB model."""
    pytest.importorskip("stardist")
    model = get("stardist").pretrained(str(shared_data / "stardist-official-dsb"))
    _check_seamless(blockwise_agreement(model, _dsb_mosaic(shared_data), 512, get("stardist").Predict(device="cpu")))


@pytest.mark.slow
def test_dsb_mosaic_unet_512_px_blocks(shared_data):
    """The same with a U-Net trained for one minute on dsb2018/train."""
    train = shared_data / "dsb2018" / "train"
    td = data.from_folders(train / "images", train / "masks")
    torch.manual_seed(0)
    s = get("unet").Settings(minutes=1.0, val_fraction=0.1, mixed_precision=False)
    unet = tasks.train("unet", td, s, None, JobContext()).model
    _check_seamless(blockwise_agreement(unet, _dsb_mosaic(shared_data), 512, get("unet").Predict(device="cpu")))
