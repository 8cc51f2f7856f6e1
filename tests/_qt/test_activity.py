"""ActivityBar: a job's bar in napari's activity dock appears, updates only on change, closes (twice)."""

import pytest

pytestmark = pytest.mark.gui


def _qt_bars(viewer):
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    return viewer.window._qt_window._activity_dialog.findChildren(QtLabeledProgressBar)


def _counting(bar):
    """How often the napari progress told its Qt bar about a new value or description."""
    seen = {"value": 0, "description": 0}
    bar._bar.events.value.connect(lambda e: seen.__setitem__("value", seen["value"] + 1))
    bar._bar.events.description.connect(lambda e: seen.__setitem__("description", seen["description"] + 1))
    return seen


def test_bar_appears_updates_and_closes_twice(make_napari_viewer, qtbot):
    from napari.utils import progress

    from napari_dlbio._qt.activity import ActivityBar

    viewer = make_napari_viewer()
    bar = ActivityBar("Training 'tiny'")
    assert bar._bar in progress._all_instances
    (qt_bar,) = _qt_bars(viewer)
    assert "Training 'tiny'" in qt_bar.description_label.text()

    bar.update(0.25, "epoch 1, step 3")
    assert qt_bar.qt_progress_bar.value() == 250
    assert qt_bar.description_label.text().startswith("Training 'tiny' · epoch 1, step 3")
    bar.update(0.5, "epoch 2, step 1")
    assert qt_bar.qt_progress_bar.value() == 500
    bar.update(0.1, "epoch 2, step 1")  # a job may start a new stage: the bar moves back
    assert qt_bar.qt_progress_bar.value() == 100

    bar.close()
    assert bar.closed and bar._bar not in progress._all_instances
    qtbot.waitUntil(lambda: not _qt_bars(viewer), timeout=2000)
    bar.close()  # a second close is fine
    bar.update(0.9, "late report")  # and so is a report arriving after the job ended
    assert bar.value == 100


def test_updates_only_what_changed(make_napari_viewer):
    from napari_dlbio._qt.activity import ActivityBar

    make_napari_viewer()
    bar = ActivityBar("Predict")
    seen = _counting(bar)
    bar.update(0.5, "tile 1/8")
    assert seen == {"value": 1, "description": 1}
    bar.update(0.5001, "tile 1/8")  # the same integer value (500) and text: nothing to tell
    assert seen == {"value": 1, "description": 1}
    bar.update(None, "loading the model")  # no fraction: the bar stays, the text changes
    assert seen == {"value": 1, "description": 2} and bar.value == 500
    bar.update(0.75, "loading the model")
    assert seen == {"value": 2, "description": 2}
    bar.close()


def test_long_message_is_cut(make_napari_viewer):
    from napari_dlbio._qt.activity import ActivityBar

    viewer = make_napari_viewer()
    bar = ActivityBar("Train")
    bar.update(0.1, "x" * 500)
    (qt_bar,) = _qt_bars(viewer)
    assert len(qt_bar.description_label.text()) < 100 and "…" in qt_bar.description_label.text()
    bar.close()


def test_closing_the_viewer_first(make_napari_viewer):
    from napari_dlbio._qt.activity import ActivityBar

    viewer = make_napari_viewer()
    bar = ActivityBar("Train")
    viewer.close()
    bar.update(0.5, "after the window closed")
    bar.close()
    bar.close()
    assert bar.closed
