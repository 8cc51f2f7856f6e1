"""The Train dock's "what to annotate next": suggestions shown, annotated slices left out, "go there"."""

import numpy as np
from qt_helpers import TINY, dock, finished, set_form

from napari_dlbio import samples


def _stack():
    planes = [samples.nuclei_2d((96, 96), seed=10 + z) for z in range(4)]
    img = np.stack([p[0] for p in planes])
    lab = np.zeros(img.shape, np.int32)
    lab[0] = planes[0][1]               # only slice 0 is annotated
    return img, lab


def test_suggestions_in_the_train_dock(make_napari_viewer, qtbot, records):
    viewer = make_napari_viewer()
    img, lab = _stack()
    viewer.add_image(img, name="stack", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(lab, name="gt", scale=(2.0, 0.5, 0.5))
    w = dock(viewer, "Train")
    w.image.set_layer("stack")
    w.labels.set_layer("gt")
    w.axes.setText("ZYX")
    set_form(w.form, TINY)
    w.name.setText("tiny")
    box = w.suggest_box

    # No model yet: a clear message, nothing runs.
    box.run_btn.click()
    assert any("train a model first" in e for e in records.errors)
    assert not w.runner.running

    w.train()
    qtbot.waitUntil(finished(w.runner), timeout=90_000)
    assert w.outcome is not None, w.status.text()
    assert box.model_info() is None     # "the model just trained"
    box.n.setValue(2)
    box.run_btn.click()
    qtbot.waitUntil(finished(w.runner), timeout=60_000)
    assert len(records.errors) == 1, records.errors
    assert len(box.suggestions) == 2 and len(box.go_buttons) == 2
    assert all(s.index != (0,) and s.loop_axes == "Z" for s in box.suggestions)   # z=0 is annotated
    assert box.suggestions[0].score >= box.suggestions[1].score
    assert "ranked in" in w.status.text()

    target = box.suggestions[1]
    box.go_buttons[1].click()
    assert viewer.dims.current_step[0] == target.index[0]
    assert viewer.dims.point[0] == 2.0 * target.index[0]     # world coordinates: the layer's scale
    viewer.add_image(img[:2], name="other")
    box.others.setChecked(True)
    req = w.suggest_request()
    assert [s.name for s in req.images] == ["stack", "other"] and req.images[1].labels is None


def test_go_there_frames_a_tile(make_napari_viewer):
    from napari_dlbio._qt.suggest_box import SuggestBox
    from napari_dlbio.suggest import Suggestion

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 1200, 1600), np.float32), name="big", scale=(1.0, 0.5, 0.25),
                     translate=(0.0, 100.0, 0.0))
    box = SuggestBox(viewer)
    found = [Suggestion("big", (2,), "T", "t=2", (512, 1024, 1024, 1536), 0.7, 12),
             Suggestion("big", (0,), "T", "t=0", (0, 0, 512, 512), 0.2, 3)]
    box.show_suggestions(found, {"big": "TYX"})
    assert len(box.go_buttons) == 2
    assert "t=2 tile y=512:1024 x=1024:1536" in box.rows.itemAt(0).widget().text()
    box.go_buttons[0].click()
    assert viewer.dims.current_step[0] == 2
    np.testing.assert_allclose(viewer.camera.center[-2:], (100 + 767.5 * 0.5, 1279.5 * 0.25))
    # The tile (256 x 128 world units) fills 90 % of the canvas along its tighter side.
    h, w = viewer.canvas.size
    assert viewer.camera.zoom == 0.9 * min(h / 256, w / 128)
    box.show_suggestions([], {"big": "TYX"})
    assert not box.go_buttons and "nothing to suggest" in box.status.text()


def test_suggestions_across_several_image_layers(make_napari_viewer):
    """Rows name their layer when several were ranked; "go there" selects that layer and its slice."""
    from napari_dlbio._qt.suggest_box import SuggestBox
    from napari_dlbio.suggest import Suggestion

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 64, 64), np.float32), name="a")
    viewer.add_image(np.zeros((4, 64, 64), np.float32), name="b")
    box = SuggestBox(viewer)
    found = [Suggestion("b", (3,), "Z", "z=3", None, 0.6, 5), Suggestion("a", (1,), "Z", "z=1", None, 0.4, 4)]
    box.show_suggestions(found, {"a": "ZYX", "b": "ZYX"})
    assert box.rows.itemAt(0).widget().text().startswith("1. b: z=3")
    assert "in 2 image layers" in box.status.text()
    box.go_buttons[0].click()
    assert viewer.dims.current_step[0] == 3 and viewer.layers.selection.active.name == "b"
