"""The job process dies (kill -9) during training and during prediction: napari survives, says so, goes on."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from qt_helpers import TINY, dock, finished, set_form, tiny_model

from napari_dlbio import store

pytestmark = pytest.mark.gui


def _layers(viewer) -> dict:
    return {lay.name: np.array(lay.data, copy=True) for lay in viewer.layers}


def _unchanged(viewer, before: dict) -> bool:
    return list(before) == [lay.name for lay in viewer.layers] and all(
        np.array_equal(viewer.layers[name].data, data) for name, data in before.items())


def test_job_process_killed_during_training(make_napari_viewer, qtbot, nuclei2d, records):
    viewer = make_napari_viewer()
    img, lab = nuclei2d
    viewer.add_image(img, name="nuclei2d")
    viewer.add_labels(lab, name="gt")
    before = _layers(viewer)
    w = dock(viewer, "Train")
    set_form(w.form, {**TINY, "epochs": 100_000})
    w.name.setText("killed")
    w.train()
    qtbot.waitUntil(lambda: w.plot.n_points >= 2, timeout=60_000)   # an epoch is done: training runs
    # The job has its bar in napari's activity dock, named after the model.
    from napari.utils import progress

    bar = w.runner.activity
    assert bar is not None and bar.desc.startswith("Training killed") and bar._bar in progress._all_instances
    pid = w.runner.executor.pid
    os.kill(pid, signal.SIGKILL)
    qtbot.waitUntil(finished(w.runner), timeout=15_000)

    (msg,) = [e for e in records.errors if "SIGKILL" in e]
    assert msg.startswith("Training failed: the job process was killed") and "last saved model is kept" in msg
    assert "SIGKILL" in w.status.text() and w.train_btn.isEnabled()
    assert w.runner.activity is None and bar.closed and bar._bar not in progress._all_instances
    assert _unchanged(viewer, before)
    assert store.list_models() == [] and not list(store.store_root().glob(".killed*"))

    # The next job gets a fresh process and works.
    set_form(w.form, TINY)
    w.name.setText("after")
    w.train()
    qtbot.waitUntil(finished(w.runner), timeout=90_000)
    assert w.outcome is not None and w.outcome.name == "after"
    assert w.runner.executor.pid not in (None, pid)


def test_job_process_killed_during_prediction(make_napari_viewer, qtbot, nuclei2d, records):
    viewer = make_napari_viewer()
    img, lab = nuclei2d
    tiny_model(qtbot, viewer, img, lab, name="tiny")
    big = np.tile(img, (8, 4, 4))          # a stack large enough to be busy for a while
    viewer.add_image(big, name="big")
    before = _layers(viewer)
    p = dock(viewer, "Predict")
    p.saved.refresh(select="tiny")
    p.images.set_checked(["big"])
    p.images.set_axes("big", "ZYX")
    p.run()
    # The job itself has reported (not only the executor's "starting the job process"): it is running.
    qtbot.waitUntil(lambda: "loading the model" in p.status.text() or p.progress.value() > 0, timeout=60_000)
    pid = p.runner.executor.pid
    os.kill(pid, signal.SIGKILL)
    qtbot.waitUntil(finished(p.runner), timeout=15_000)

    assert any(e.startswith("Predict failed: the job process was killed") for e in records.errors), records.all
    assert _unchanged(viewer, before) and p.added == []

    p.images.set_checked(["nuclei2d"])
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=60_000)
    assert [lay.name for lay in p.added] == ["nuclei2d_tiny"] and p.runner.executor.pid != pid
