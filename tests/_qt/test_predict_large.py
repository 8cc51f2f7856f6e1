"""GUI tests: the Predict dock on a dask-backed layer larger than a block, into OME-Zarr."""

import dask.array as da
import numpy as np
import pytest
import zarr
from qt_helpers import dock, finished

from napari_dlbio import metrics, samples

pytestmark = pytest.mark.gui


@pytest.fixture
def tiny(tmp_path):
    """A tiny U-Net in the store (trained here, in-process), and a lazy 2D image: a zarr-backed dask array."""
    from napari_dlbio import backends, data, tasks

    img, lab = samples.nuclei_2d((256, 256), seed=1)
    # Small, but trained enough to separate nuclei (~6 s): a blob model would make stitching trivial.
    settings = backends.get("unet").Settings(epochs=6, steps_per_epoch=10, batch_size=4, patch_size=64, depth=2,
                                             base_width=8, val_patches=2)
    tasks.train("unet", data.from_arrays(img, lab), settings, save_to="tiny")
    big, _ = samples.nuclei_2d((512, 384), seed=5)
    z = zarr.open_array(str(tmp_path / "input.zarr"), mode="w", shape=big.shape, chunks=(128, 128),
                        dtype=big.dtype)
    z[:] = big
    return da.from_zarr(z), big


def _to_ome_zarr(p, folder, block=128):
    p.saved.refresh(select="tiny")
    p.images.set_checked(["big"])
    assert p.output_box.to_disk()          # a lazy layer: OME-Zarr is suggested
    p.output_box.folder.setText(str(folder))
    p.output_box.more.expand(animate=False)
    p.output_box.block_size.setValue(block)


def test_lazy_layer_to_ome_zarr_and_back(make_napari_viewer, qtbot, tiny, tmp_path, records):
    lazy, big = tiny
    viewer = make_napari_viewer()
    viewer.add_image(lazy, name="big", scale=(0.5, 0.25), translate=(10.0, -4.0))
    p = dock(viewer, "Predict")
    _to_ome_zarr(p, tmp_path / "out")
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=120_000)
    assert not records.errors, records.errors
    (out,) = p.added
    assert out.name == "big_tiny" and out.name in viewer.layers
    assert not any("(running)" in lay.name for lay in viewer.layers)   # the live layer gave way
    level0 = out.data[0] if out.multiscale else out.data
    assert isinstance(level0, zarr.Array)                             # read lazily from the store
    assert level0.shape == big.shape and np.dtype(level0.dtype) == np.uint32
    assert tuple(out.scale) == (0.5, 0.25) and tuple(out.translate) == (10.0, -4.0)
    prov = out.metadata["napari_dlbio"]
    assert prov["model"] == "tiny" and prov["source_layer"] == "big"
    assert prov["store"].endswith("big_tiny.ome.zarr") and (tmp_path / "out" / "big_tiny.ome.zarr").is_dir()
    # The same objects as a prediction of the whole image in memory (blocks stitched seamlessly).
    from napari_dlbio import tasks

    whole = tasks.predict(tasks.load_model("tiny"), big).outputs["labels"]
    assert whole.max() >= 50                                          # real objects, many on block borders
    assert metrics.match(whole, np.asarray(level0[:])).ap >= 0.98
    assert np.asarray(viewer.layers["big"].data).shape == big.shape   # the user's layer is untouched


def test_cancel_keeps_the_blocks_done_as_a_partial_layer(make_napari_viewer, qtbot, tiny, tmp_path, records):
    lazy, _ = tiny
    lazy = da.tile(lazy, (4, 4))                                     # 2048 x 1536: 192 blocks of 128 px
    viewer = make_napari_viewer()
    viewer.add_image(lazy, name="big")
    p = dock(viewer, "Predict")
    _to_ome_zarr(p, tmp_path / "out")
    p.run()
    qtbot.waitUntil(lambda: "block" in p.status.text() and not p.status.text().endswith("block 0/192"),
                    timeout=120_000)
    qtbot.waitUntil(lambda: p.live is not None and p.live.layer is not None, timeout=60_000)
    p.cancel()
    qtbot.waitUntil(finished(p.runner), timeout=60_000)
    partial = [lay for lay in viewer.layers if lay.name.endswith("(partial)")]
    assert len(partial) == 1 and partial[0].name == "big_tiny (partial)", [lay.name for lay in viewer.layers]
    assert np.asarray(partial[0].data[:128, :128]).max() > 0        # the first blocks are there
    assert not (tmp_path / "out" / "big_tiny.ome.zarr").exists()     # nothing that looks finished
    assert p.status.text() == "cancelled; blocks done kept in 'big_tiny (partial)'"
