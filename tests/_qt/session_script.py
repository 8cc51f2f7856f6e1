"""A napari session in a process of its own, driven through the docks (run by tests/_qt/test_session.py).

``quit OUT``: train, close the window mid-training (napari.run() returns), exit.
``backends OUT``: train and predict with every installed backend through the docks.
Both write a JSON report to OUT: the job process pid, times, and which of
torch/cellpose/stardist/careamics/lightning napari's process imported.
"""

from __future__ import annotations

import json
import os
import sys
import time

import napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

FORBIDDEN = ("torch", "cellpose", "stardist", "careamics", "lightning", "pytorch_lightning")

# Tiny settings per backend: each trains in seconds on 2 CPU cores.
TINY = {
    "unet": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 32, "depth": 2, "base_width": 8,
             "val_patches": 2},
    "stardist": {"n_rays": 16, "width": 8, "depth": 2, "features": 16, "patch_size": 64, "epochs": 2,
                 "steps_per_epoch": 3, "batch_size": 2},
    "n2v": {"epochs": 1, "steps_per_epoch": 3, "patch_size": 32, "batch_size": 8, "base_filters": 16},
}


# Cellpose needs a model to start from (cpsam cannot be downloaded here): the test writes a tiny
# random Cellpose-SAM file first (in its own process, so napari's never imports torch for it).
CELLPOSE_START = os.environ.get("NAPARI_DLBIO_TEST_CELLPOSE")
if CELLPOSE_START:
    TINY["cellpose"] = {"start_model": CELLPOSE_START, "epochs": 1, "batch_size": 2, "min_train_masks": 1,
                        "learning_rate": 1e-3, "val_patches": 1}


def imported() -> list[str]:
    return sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN))


def wait(until, timeout: float) -> None:
    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > end:
            raise TimeoutError("the dock's job did not finish in time")
        app.processEvents()
        time.sleep(0.01)


def train_dock(viewer, backend: str, settings: dict, name: str):
    _, w = viewer.window.add_plugin_dock_widget("napari-dlbio", "Train")
    w.backend.setCurrentIndex(w.backend.findData(backend))
    w.image.set_layer("nuclei2d")
    if backend != "n2v":
        w.labels.set_layer("nuclei2d_gt")
    w.form.set_values(settings)
    w.name.setText(name)
    return w


def run_backends(viewer, report: dict) -> None:
    from napari_dlbio import backends

    done = report.setdefault("done", [])
    for backend in [b for b in TINY if b in backends.available()]:
        w = train_dock(viewer, backend, TINY[backend], f"s-{backend}")
        w.train()
        wait(lambda w=w: not w.runner.running, 300)
        assert w.outcome is not None, w.status.text()
        w.predict_with_model()
        wait(lambda w=w: not w.runner.running, 120)
        _, p = viewer.window.add_plugin_dock_widget("napari-dlbio", "Predict")
        p.saved.refresh(select=f"s-{backend}")
        p.images.set_checked(["nuclei2d"])
        p.run()
        wait(lambda p=p: not p.runner.running, 120)
        done.append({"backend": backend, "train_layers": [lay.name for lay in w.predicted],
                     "predict_layers": [lay.name for lay in p.added]})
        viewer.window.remove_dock_widget(w)
        viewer.window.remove_dock_widget(p)


def run_quit(viewer, report: dict) -> None:
    w = train_dock(viewer, "unet", {**TINY["unet"], "epochs": 100_000}, "quit-mid")
    w.train()

    def look() -> None:
        if w.plot.n_points >= 4:                  # two epochs done: a best model exists
            report["pid"] = w.runner.executor.pid
            report["closed_at"] = time.time()
            viewer.close()
        else:
            QTimer.singleShot(100, look)

    QTimer.singleShot(100, look)
    napari.run()


def main(mode: str, out: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-dlbio", "nuclei_2d")
    report: dict = {"mode": mode, "napari_pid": os.getpid()}
    try:
        if mode == "quit":
            run_quit(viewer, report)
        else:
            run_backends(viewer, report)
            viewer.close()
    finally:
        report["imported"] = imported()
        report["ended_at"] = time.time()
        with open(out, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
