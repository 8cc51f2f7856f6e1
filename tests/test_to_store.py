"""The Predict dock's path to OME-Zarr (without Qt): request -> store -> lazy layers; on a cluster too."""

import numpy as np
import pytest
import zarr

from napari_dlbio import metrics, samples, tasks, to_store
from napari_dlbio._layers import LayerSnapshot
from napari_dlbio.jobs import Cancelled, JobContext
from napari_dlbio.requests import ModelSource, OutputChoice, PredictRequest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(tiny_unet):
    return tiny_unet


def _snap(tmp_path, shape=(384, 320), scale=(0.5, 0.25)):
    img, _ = samples.nuclei_2d(shape, seed=4)
    z = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=img.shape, chunks=(128, 128), dtype=img.dtype)
    z[:] = img
    snap = LayerSnapshot("cells", z, "YX", scale, (3.0, 1.0), source_path=str(tmp_path / "img.zarr"))
    return snap, img


def test_is_large_and_store_names(tmp_path):
    assert to_store.is_large(zarr.zeros((10, 10))) and not to_store.is_large(np.zeros((10, 10)))
    assert to_store.is_large(np.zeros(to_store.LARGE_BYTES + 1, np.uint8))
    assert to_store.store_path(tmp_path, "my cells [2]", "tiny").name == "my_cells_2_tiny.ome.zarr"


def test_request_to_store_gives_lazy_layers_with_the_source_geometry(model, tmp_path):
    snap, img = _snap(tmp_path)
    source = ModelSource.named(str(model))
    req = PredictRequest(source, [snap], output=OutputChoice(str(tmp_path / "out"), block_size=128))
    events = list(req.run(JobContext()))
    (done,) = [e for e in events if isinstance(e, to_store.StoreDone)]
    assert done.store.endswith("cells_tiny.ome.zarr") and done.image.data is None
    assert to_store.working_arrays(done.store) == []          # finished: nothing left in a working copy
    (layer,) = req.layers(done, existing=["cells"])
    data, meta, kind = layer
    assert kind == "labels" and meta["name"] == "cells_tiny"
    assert meta["scale"] == [0.5, 0.25] and meta["translate"] == [3.0, 1.0]
    assert meta["metadata"]["napari_dlbio"]["source_layer"] == "cells"
    level0 = data[0] if meta["multiscale"] else data
    whole = tasks.predict(tasks.load_model(str(model)), img).outputs["labels"]
    assert whole.max() >= 20 and metrics.match(whole, np.asarray(level0[:])).ap >= 0.98


def test_cancelled_store_is_left_as_a_working_copy(model, tmp_path):
    snap, _ = _snap(tmp_path)
    def progress(p):
        if p.message.startswith("block 2/"):
            ctx.cancel()

    ctx = JobContext(progress)
    m = tasks.load_model(str(model))
    with pytest.raises(Cancelled, match="blocks done are kept"):
        to_store.predict_to_store(m, snap, str(tmp_path / "out"), _ref(m), block_size=128, ctx=ctx)
    final = to_store.store_path(tmp_path / "out", "cells", "tiny")
    assert not final.exists()
    (name, kind, arr, axes), = to_store.working_arrays(final)
    assert (name, kind, axes) == ("labels", "labels", "YX") and np.asarray(arr[:]).max() > 0


def test_working_arrays_survive_raw_labels_going_away_while_read(model, tmp_path, monkeypatch):
    """The job removes an item's raw labels once stitched, possibly between listing and opening."""
    snap, _ = _snap(tmp_path)
    ctx = JobContext(lambda p: ctx.cancel() if p.message.startswith("block 2/") else None)
    m = tasks.load_model(str(model))
    with pytest.raises(Cancelled):
        to_store.predict_to_store(m, snap, str(tmp_path / "out"), _ref(m), block_size=128, ctx=ctx)
    final = to_store.store_path(tmp_path / "out", "cells", "tiny")
    opened = zarr.open_array

    def vanished(path, *a, **k):
        if "/raw/" in str(path):
            raise FileNotFoundError(path)
        return opened(path, *a, **k)

    monkeypatch.setattr(zarr, "open_array", vanished)
    (name, kind, arr, axes), = to_store.working_arrays(final)
    assert (name, kind) == ("labels", "labels") and arr.shape == snap.data.shape


def test_on_a_local_cluster_the_workers_read_the_layer_s_file(model, tmp_path):
    pytest.importorskip("distributed")
    from napari_dlbio import cluster

    snap, _ = _snap(tmp_path)
    m = tasks.load_model(str(model))
    here = to_store.predict_to_store(m, snap, str(tmp_path / "here"), _ref(m), block_size=128)
    with cluster.connect("local:1") as cl:
        there = to_store.predict_to_store(m, snap, str(tmp_path / "there"), _ref(m), block_size=128,
                                          runner=cl.runner(), model_source=ModelSource.named(str(model)))
    a, b = (zarr.open_array(f"{d.store}/labels/labels/0", mode="r")[:] for d in (here, there))
    assert a.max() >= 20 and metrics.match(a, b).ap == 1.0
    # A layer without a file cannot go to the workers: said before anything runs.
    nofile = LayerSnapshot("mem", np.zeros((300, 300), np.uint8), "YX", (1.0, 1.0), (0.0, 0.0))
    with pytest.raises(ValueError, match="no file that the cluster's workers can read"):
        to_store.predict_to_store(m, nofile, str(tmp_path / "x"), _ref(m), runner=object())


def _ref(m):
    from napari_dlbio.requests import ModelRef

    return ModelRef.of(m)
