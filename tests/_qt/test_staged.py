"""Docks appear at once and build their parts over the next event-loop turns (``_qt/staged.py``)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui

DOCKS = ("train_widget:TrainWidget", "predict_widget:PredictWidget", "evaluate_widget:EvaluateWidget")


def _dock_class(path: str):
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(f"napari_dlbio._qt.{module}"), name)


@pytest.mark.parametrize("path", DOCKS)
def test_dock_builds_in_later_turns_and_every_later_name_exists(make_napari_viewer, qtbot, path):
    viewer = make_napari_viewer(show=True)   # shown: docks get their real sizes
    cls = _dock_class(path)
    viewer.add_image(np.zeros((64, 64), np.float32), name="nuclei2d")
    viewer.add_labels(np.zeros((64, 64), np.int32), name="nuclei2d_gt")
    qtbot.waitExposed(viewer.window._qt_window)   # laid out before the dock comes, as for a user
    w = cls(viewer)
    viewer.window.add_dock_widget(w, name=cls.__name__)
    # Constructed: only the first part. napari probes docks for names such as these; that builds nothing.
    assert not w._staged.done
    assert getattr(w, "native", None) is None and not hasattr(w, "reset_choices")
    assert not w._staged.done
    # The event loop builds the rest without anyone asking.
    qtbot.waitUntil(lambda: w._staged.done, timeout=5_000)
    missing = [name for name in cls.LATER if name not in w.__dict__]
    assert not missing, f"{cls.__name__}.LATER names attributes no step creates: {missing}"
    # napari sized the dock for its first part: once built, it is as wide as all its parts want.
    from qtpy.QtWidgets import QScrollArea

    area = w.findChild(QScrollArea)
    qtbot.waitUntil(lambda: area.viewport().width() >= area.widget().minimumSizeHint().width(), timeout=5_000)


def test_a_later_part_asked_for_early_is_built_at_once(make_napari_viewer, qtbot):
    from napari_dlbio._qt.train_widget import TrainWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), "float32"), name="img")
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    assert not w._staged.done
    assert w.form is not None          # a property that reads a later part
    assert w._staged.done and w.image.currentText() == "img"
    with pytest.raises(AttributeError, match="no attribute 'not_a_part'"):
        w.not_a_part
