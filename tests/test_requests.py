"""The docks' jobs as plain requests: train and predict from arrays, without Qt or a viewer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_dlbio import backends, samples, store  # noqa: E402
from napari_dlbio._layers import LayerSnapshot  # noqa: E402
from napari_dlbio.execution.base import yield_all  # noqa: E402
from napari_dlbio.jobs import JobContext, Progress  # noqa: E402
from napari_dlbio.requests import (  # noqa: E402
    MODELS,
    ImageDone,
    ImageFailed,
    ImageStarted,
    ModelLoaded,
    ModelSource,
    PredictRequest,
    TrainRequest,
)

# val_fraction: a 128-row image keeps a 32-row strip for validation (metrics), as a GUI user gets.
TINY = dict(epochs=2, steps_per_epoch=3, batch_size=2, patch_size=32, base_width=4, depth=2, val_fraction=0.25)


def _run(gen):
    """Drain a generator job as the executors do: (events, return value)."""
    events: list = []
    value = yield_all(gen, events.append)
    return events, value


def test_train_then_predict_requests():
    img, lab = samples.nuclei_2d((128, 128), seed=3)
    settings = backends.spec("unet").Settings(**TINY)
    request = TrainRequest("unet", LayerSnapshot.from_array("nuclei", img), lab.copy(), settings, "tiny")
    reports: list[Progress] = []
    outcome = request.run(JobContext(reports.append))
    assert outcome.name == "tiny" and outcome.stopped == "completed" and len(outcome.history) == 2

    (info,) = store.list_models()
    assert info.name == "tiny" and info.backend == "unet" and info.path == outcome.path
    assert "ap50" in info.metrics and info.metrics["training"]["epochs"] == 2
    assert info.provenance["sources"][0]["image"] == "nuclei"
    assert reports[0].message == "reading the annotated slices" and reports[-1].fraction == 1.0

    movie = np.stack([img, img[::-1]])
    bad = img.copy()
    bad[3, 3] = np.nan
    images = [LayerSnapshot.from_array("nuclei", img), LayerSnapshot.from_array("bad", bad),
              LayerSnapshot.from_array("movie", movie, axes="TYX")]
    MODELS.clear()  # as a fresh job process: the model is loaded (the trained one was cached)
    predict = PredictRequest(ModelSource.saved(info), images, backends.spec("unet").Predict(), extras=True)
    events, n = _run(predict.run(JobContext()))
    assert n == 3
    assert [type(e) for e in events] == [ModelLoaded, ImageStarted, ImageDone, ImageStarted, ImageFailed,
                                         ImageStarted, ImageDone]
    assert events[0].key == ModelSource.folder(info.path).key
    failed = events[4]
    assert failed.name == "bad" and "NaN" in str(failed.error)
    done, movie_done = events[2], events[6]
    labels = done.prediction.outputs["labels"]
    assert labels.shape == img.shape and labels.dtype == np.int32
    assert movie_done.prediction.outputs["labels"].shape == movie.shape

    # Named <image>_<model>, never replacing a layer: the probabilities come along as extras.
    (main, meta, kind), *extra = predict.layers(done, existing=["nuclei_tiny"])
    assert kind == "labels" and meta["name"] == "nuclei_tiny [2]" and main.dtype == np.int32
    assert meta["metadata"]["napari_dlbio"]["model"] == "tiny"
    assert [m["name"] for _, m, _ in extra] == ["nuclei_tiny_probability"]

    # Events are plain data (no live model: they cross into napari's process); the image's data stays behind.
    assert events[0].model.name == "tiny" and events[0].model.backend == "unet"
    assert done.image.data is None and done.image.name == "nuclei"
    # The loaded model stays in the job's process (MODELS): the next request loads nothing.
    again = PredictRequest(ModelSource.saved(info), images[:1])
    events, _ = _run(again.run(JobContext()))
    assert [type(e) for e in events] == [ImageStarted, ImageDone]


def test_requests_refuse_what_cannot_run():
    img, _ = samples.nuclei_2d((64, 64), seed=0)
    snap = LayerSnapshot.from_array("nuclei", img)
    with pytest.raises(ValueError, match="learns from labels"):
        TrainRequest("unet", snap, None, backends.spec("unet").Settings(), "m")
    with pytest.raises(store.ModelError, match="invalid model name"):
        TrainRequest("unet", snap, np.zeros(img.shape, np.int32), backends.spec("unet").Settings(), "a b")
    with pytest.raises(ValueError, match="tick at least one image"):
        PredictRequest(ModelSource.pretrained("unet", "x"), [])
    with pytest.raises(ValueError, match="choose a saved model"):
        PredictRequest(None, [snap])
    with pytest.raises(store.ModelError):
        ModelSource.folder("/nonexistent/model")


def test_requests_load_no_qt_napari_or_torch():
    probe = ("import sys, json, napari_dlbio.requests\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'torch', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui'})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
