"""GUI tests: docks open from the manifest, train, predict, cancel, errors (napari under Xvfb)."""

import time

import napari
import numpy as np
import pytest
from qt_helpers import TINY, dock, finished, set_form, tiny_model

from napari_dlbio import store

pytestmark = pytest.mark.gui


def test_docks_open_from_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    from napari_dlbio._qt.models_widget import ModelsWidget
    from napari_dlbio._qt.predict_widget import PredictWidget
    from napari_dlbio._qt.train_widget import TrainWidget

    assert isinstance(dock(viewer, "Train"), TrainWidget)
    assert isinstance(dock(viewer, "Predict"), PredictWidget)
    assert isinstance(dock(viewer, "Models"), ModelsWidget)


def test_train_predict_loop(make_napari_viewer, qtbot, nuclei2d, records):
    viewer = make_napari_viewer()
    img, lab = nuclei2d
    w = tiny_model(qtbot, viewer, img, lab, name="tiny")

    # Saved with provenance; metrics and loss curve shown.
    (info,) = store.list_models()
    assert info.name == "tiny" and info.backend == "unet"
    assert "AP@0.5" in w.metrics.text() and "F1" in w.metrics.text()
    assert w.plot.n_points >= 2 * 2  # train + val for both epochs
    assert not records.errors

    # "Predict with this model" on the training image -> new labels layer, user's layers untouched.
    w.predict_btn.click()
    qtbot.waitUntil(finished(w.runner), timeout=30_000)
    out = viewer.layers["nuclei2d_tiny"]
    assert out.data.dtype == np.int32 and out.data.shape == img.shape
    assert np.array_equal(viewer.layers["gt"].data, lab)

    # Predict dock: a 2D image and a time-lapse with scale/translate, in one batch.
    movie = np.stack([img, img[::-1]])
    viewer.add_image(movie, name="movie", scale=(5.0, 0.5, 0.5), translate=(0.0, 10.0, 20.0))
    p = dock(viewer, "Predict")
    p.saved.refresh(select="tiny")
    p.images.set_checked(["nuclei2d", "movie"])
    p.images.set_axes("movie", "TYX")
    p.probabilities.setChecked(True)
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=30_000)
    assert not records.errors, records.errors
    a, b = viewer.layers["nuclei2d_tiny [2]"], viewer.layers["movie_tiny"]
    assert a.data.dtype == np.int32 and b.data.dtype == np.int32
    assert b.data.shape == movie.shape
    assert tuple(b.scale) == (5.0, 0.5, 0.5) and tuple(b.translate) == (0.0, 10.0, 20.0)
    prov = b.metadata["napari_dlbio"]
    assert prov["model"] == "tiny" and prov["backend"] == "unet" and prov["source_layer"] == "movie"
    assert prov["model_path"] == str(info.path) and prov["date"] and "settings" in prov
    # The probabilities came along as an image layer with the same geometry (plus a class axis).
    probs = viewer.layers["movie_tiny_probability"]
    assert tuple(probs.scale)[0] == 5.0 and probs.data.shape[-2:] == movie.shape[-2:]
    # The model was loaded once (in the dock's job process) and is reused.
    assert [m.name for m in p.loaded] == ["tiny"]
    p.images.set_checked(["nuclei2d"])
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=30_000)
    assert [m.name for m in p.loaded] == ["tiny"] and "nuclei2d_tiny [3]" in viewer.layers


def test_cancel_training_is_quick_and_keeps_best(make_napari_viewer, qtbot, nuclei2d, records):
    viewer = make_napari_viewer()
    img, lab = nuclei2d
    viewer.add_image(img, name="nuclei2d")
    viewer.add_labels(lab, name="gt")
    w = dock(viewer, "Train")
    set_form(w.form, {"epochs": 1000, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 32,
                      "depth": 2, "base_width": 8, "val_patches": 2})
    w.name.setText("cancelled")
    w.train()
    qtbot.waitUntil(lambda: w.plot.n_points >= 2, timeout=60_000)  # at least one epoch done
    t0 = time.monotonic()
    w.cancel_btn.click()
    qtbot.waitUntil(finished(w.runner), timeout=10_000)
    assert time.monotonic() - t0 < 2.5
    assert w.outcome is not None and w.outcome.stopped == "cancelled"
    assert store.list_models()[0].name == "cancelled"
    assert "cancelled" in w.status.text()


def test_input_errors_notify_and_change_nothing(make_napari_viewer, qtbot, nuclei2d, records):
    viewer = make_napari_viewer()
    img, lab = nuclei2d
    viewer.add_image(img, name="nuclei2d")
    viewer.add_labels(lab[:100], name="wrong")
    w = dock(viewer, "Train")
    set_form(w.form, {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "patch_size": 32, "depth": 2, "base_width": 8})
    n_layers = len(viewer.layers)

    # Labels of another shape.
    w.labels.set_layer("wrong")
    w.train()
    qtbot.waitUntil(finished(w.runner), timeout=30_000)
    assert any("shape" in e for e in records.errors), records.all

    # Labels without any annotation.
    viewer.add_labels(np.zeros(img.shape, np.int32), name="empty")
    w.labels.set_layer("empty")
    w.update_summary()
    assert w.annotated.text().startswith("annotated: none")
    w.train()
    qtbot.waitUntil(finished(w.runner), timeout=30_000)
    assert any("no annotated" in e for e in records.errors), records.all

    # Invalid settings are a readable notification, not a traceback.
    w.form.widget("learning_rate").setText("-1")
    w.train()
    assert any("invalid settings: learning_rate" in e for e in records.errors), records.errors
    assert not w.runner.running
    assert store.list_models() == []
    assert len(viewer.layers) == n_layers + 1  # only the "empty" labels we added


def test_predict_errors_notify(make_napari_viewer, qtbot, nuclei2d, records):
    from napari_dlbio import backends, data, tasks

    img, lab = nuclei2d
    settings = backends.get("unet").Settings(**TINY)
    tasks.train("unet", data.from_arrays(img, lab), settings, save_to="tiny")
    viewer = make_napari_viewer()
    p = dock(viewer, "Predict")

    # Nothing ticked.
    p.run()
    assert any("tick at least one image" in e for e in records.errors), records.all

    # NaN image: notification, no new layer, the image unchanged.
    bad = img.copy()
    bad[5, 5] = np.nan
    viewer.add_image(bad, name="nan")
    before = len(viewer.layers)
    p = dock(viewer, "Predict")
    p.saved.refresh(select="tiny")
    p.images.set_checked(["nan"])
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=30_000)
    assert any("NaN" in e for e in records.errors), records.all
    assert len(viewer.layers) == before
    assert np.isnan(viewer.layers["nan"].data[5, 5])

    # Wrong axes typed by the user: a readable error before anything runs.
    p.images.set_axes("nan", "ZYX")
    p.run()
    assert any("axes 'ZYX'" in e for e in records.errors), records.all
    assert not p.runner.running


def test_annotated_slices_label(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    vol = np.random.default_rng(0).random((40, 64, 64)).astype(np.float32)
    lab = np.zeros(vol.shape, np.int32)
    lab[3, 5:10, 5:10] = 1
    lab[7, 5:10, 5:10] = 2
    lab[7, 20:30, 20:30] = 3
    lab[12, 40:50, 40:50] = 7
    viewer.add_image(vol, name="vol")
    labels = viewer.add_labels(lab, name="lab")
    w = dock(viewer, "Train")
    w.update_summary()
    assert w.annotated.text() == "annotated: z=3, 7, 12 (3 of 40 slices, 4 objects)"
    # Painting updates the text (debounced).
    labels.data[20, 0:4, 0:4] = 9
    labels.events.data()
    qtbot.waitUntil(lambda: "z=3, 7, 12, 20" in w.annotated.text(), timeout=3000)


def test_predict_with_pretrained_backend_model(shared_data, make_napari_viewer, qtbot, records):
    """The 'Pretrained' source: a backend's own model (here a StarDist folder); offline names fail clearly."""
    # shared_data comes first: a skip after napari's viewer fixture was set up errors in its teardown.
    from napari_dlbio import backends, samples

    if "stardist" not in backends.available():
        pytest.skip("stardist is not installed")
    img, _ = samples.stardist_sample_2d()
    viewer = make_napari_viewer()
    viewer.add_image(img[:256, :256], name="dsb", scale=(0.5, 0.5))
    p = dock(viewer, "Predict")
    p.source.setCurrentText("Pretrained")
    p.pre_backend.setCurrentIndex(p.pre_backend.findData("stardist"))
    assert p.form is not None and p.form.model_cls is backends.get("stardist").Predict
    p.pre_name.setText(str(shared_data / "stardist-official-dsb"))
    p.form.set_values({"polygons": True})
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=60_000)
    assert not records.errors, records.errors
    out, outlines = p.added
    assert out.data.dtype == np.int32 and out.data.max() > 10 and tuple(out.scale) == (0.5, 0.5)
    assert out.metadata["napari_dlbio"]["backend"] == "stardist"
    # The polygons asked for become a shapes layer over the labels, one outline per object.
    assert isinstance(outlines, napari.layers.Shapes) and outlines.name == f"{out.name}_shapes"
    assert len(outlines.data) == len(np.unique(out.data)) - 1 and tuple(outlines.scale) == (0.5, 0.5)

    # A name that needs a download: a notification saying so, no layer.
    p.pre_name.setText("2D_versatile_fluo")
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=60_000)
    assert any("2D_versatile_fluo" in e for e in records.errors), records.all
    assert p.added == []


def test_saved_model_lists_follow_the_store(make_napari_viewer, qtbot):
    """A model saved elsewhere (Train dock, CLI) appears in the Predict dock without a click."""
    from napari_dlbio import store

    viewer = make_napari_viewer()
    w = dock(viewer, "Predict")
    assert w.saved.info() is None and "no saved models yet" in w.saved.combo.currentText()
    info = store.ModelInfo(path=store.store_root(), name="fresh", backend="unet", settings={})
    store.save(info, lambda folder: (folder / "weights.pt").write_bytes(b""), "fresh")
    qtbot.waitUntil(lambda: w.saved.info() is not None and w.saved.info().name == "fresh", timeout=10_000)
    assert "fresh" in w.saved.combo.currentText()
