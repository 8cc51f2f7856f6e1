"""GUI tests of the Review dock: jump to an object, keep/delete it, hide and clean by score."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_dlbio import objects, samples, tasks
from napari_dlbio._layers import LayerSnapshot, prediction_layers

pytestmark = pytest.mark.gui


def _result(viewer, labels, axes="YX", scale=None, name="cells"):
    """A result layer as the Predict dock adds it: provenance and the objects table as features."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([[0.0], rng.uniform(0.05, 0.95, int(labels.max()))]).astype(np.float32)
    tables = objects.ObjectTables(axes[-2:], axes)
    for z in range(labels.shape[0]) if len(axes) == 3 else [None]:
        tables.add({axes[0]: z} if z is not None else {}, labels[z] if z is not None else labels, scores)
    pred = tasks.Prediction({"labels": labels}, {"labels": axes}, "tiny", objects=tables.table())
    snap = LayerSnapshot.from_array(name, labels, axes)
    if scale is not None:
        snap.scale = scale
    (layer,) = prediction_layers(pred, snap, {"backend": "unet", "model": "tiny"})
    data, meta, kind = layer
    return viewer.add_labels(data, **meta), scores


def _widget(viewer):
    from napari_dlbio._qt.review_widget import ReviewWidget

    w = ReviewWidget(viewer)
    viewer.window.add_dock_widget(w, name="Review")
    return w


def test_review_is_in_the_manifest():
    manifest = yaml.safe_load((Path(__file__).parents[2] / "src/napari_dlbio/napari.yaml").read_text())
    widgets = manifest["contributions"]["widgets"]
    assert {"command": "napari-dlbio.review_widget", "display_name": "Review"} in widgets


def test_objects_sorted_and_jump_centres_and_selects(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, lab = samples.nuclei_2d((160, 200), seed=2)
    layer, scores = _result(viewer, lab, scale=(0.5, 0.25))
    viewer.add_labels(lab.copy(), name="my labels")   # the user's own: not listed
    w = _widget(viewer)
    assert [w.layer_box.itemText(i) for i in range(w.layer_box.count())] == [layer.name]
    listed = [int(w.table.item(i, 0).text()) for i in range(w.table.rowCount())]
    ids = np.unique(lab)[1:]
    assert sorted(listed) == ids.tolist() and listed[0] == ids[np.argmin(scores[ids])]
    shown = [float(w.table.item(i, 1).text()) for i in range(3)]
    assert shown == sorted(float(f"{s:.3f}") for s in scores[ids])[:3]

    target = listed[5]
    w.select(target)
    yx = np.argwhere(lab == target).mean(0) * (0.5, 0.25)
    assert np.allclose(viewer.camera.center[-2:], yx, atol=1e-6)
    assert layer.selected_label == target


def test_jump_goes_to_the_objects_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([samples.nuclei_2d((96, 96), seed=s)[1] for s in (3, 4, 5)])
    stack[1:][stack[1:] > 0] += stack[0].max()     # unique ids over the stack, as predict makes them
    stack[2:][stack[2:] > 0] += stack[1].max() - stack[0].max()
    layer, _ = _result(viewer, stack, axes="ZYX")
    w = _widget(viewer)
    target = int(stack[2].max())
    w.select(target)
    assert viewer.dims.point[0] == 2
    assert np.allclose(viewer.camera.center[-2:], np.argwhere(stack[2] == target).mean(0))
    assert layer.selected_label == target


def test_keep_and_delete_edit_only_our_layer(make_napari_viewer, qtbot, records):
    viewer = make_napari_viewer()
    _, lab = samples.nuclei_2d((128, 128), seed=6)
    layer, _ = _result(viewer, lab)
    w = _widget(viewer)
    n = w.table.rowCount()
    first = int(w.table.item(0, 0).text())
    w.select(first)
    w.delete_selected()
    assert not (layer.data == first).any() and np.array_equal(layer.data[lab != first], lab[lab != first])
    assert first not in layer.features["label"].tolist() and w.table.rowCount() == n - 1
    nxt = w.selected_label()          # moved on to the next object
    assert nxt is not None and nxt != first
    w.keep_selected()
    assert bool(layer.features.set_index("label").loc[nxt, "kept"]) and w.table.item(0, 3).text() == "kept"

    # A user's labels layer with scores (e.g. loaded) is shown read only and never edited.
    mine = viewer.add_labels(lab.copy(), name="mine", features=dict(layer.features))
    w.layer_box.set_layer("mine")
    assert not w.delete_btn.isEnabled()
    w.select(int(w.table.item(0, 0).text()))
    w.delete_selected()
    assert np.array_equal(mine.data, lab) and "not a napari-dlbio result" in records.errors[-1]


def test_threshold_hides_then_apply_makes_a_cleaned_copy(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, lab = samples.nuclei_2d((128, 128), seed=7)
    layer, scores = _result(viewer, lab)
    w = _widget(viewer)
    ids = np.unique(lab)[1:]
    low = ids[scores[ids] < 0.5]
    high = ids[scores[ids] >= 0.5]
    assert len(low) and len(high)
    kept = int(low[0])
    w.select(kept)
    w.keep_selected()
    w.set_threshold(0.5)
    hidden = next(int(i) for i in low[1:] if i != w.selected_label())
    assert np.array_equal(layer.data, lab)                       # hiding is not an edit
    assert layer.get_color(hidden)[3] == 0 and layer.get_color(int(high[0]))[3] > 0
    assert layer.get_color(kept)[3] > 0                          # kept objects stay visible
    w.select(hidden)
    assert layer.get_color(hidden)[3] > 0                        # ... and so does the one under review
    cleaned = w.apply()
    assert cleaned.name == f"{layer.name} (cleaned)"
    left = set(np.unique(cleaned.data)) - {0}
    assert left == set(high.tolist()) | {kept}
    assert set(cleaned.features["label"]) == left and np.array_equal(layer.data, lab)
    assert cleaned.metadata["napari_dlbio"]["cleaned"]["min_score"] == 0.5
    w.set_threshold(0)
    assert all(layer.get_color(int(i))[3] > 0 for i in low)     # back to the layer's own colours


def test_predict_dock_results_carry_scores_into_review(make_napari_viewer, qtbot, nuclei2d):
    from qt_helpers import dock, finished

    from napari_dlbio import backends, data

    img, lab = nuclei2d
    settings = backends.get("unet").Settings(epochs=6, steps_per_epoch=10, batch_size=4, patch_size=64,
                                             depth=2, base_width=8, val_patches=2)
    tasks.train("unet", data.from_arrays(img, lab), settings, save_to="tiny")
    viewer = make_napari_viewer()
    viewer.add_image(img, name="nuclei2d")
    p = dock(viewer, "Predict")
    p.saved.refresh(select="tiny")
    p.images.set_checked(["nuclei2d"])
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=60_000)
    layer = viewer.layers["nuclei2d_tiny"]
    f = layer.features
    ids = np.unique(layer.data)
    assert len(f) and sorted(f["label"]) == ids[ids > 0].tolist()
    assert f["score"].between(0, 1).all() and list(f["index"]) == list(f["label"])
    w = _widget(viewer)
    assert w.layer() is layer and w.table.rowCount() == len(f)
