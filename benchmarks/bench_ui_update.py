"""What one progress update of a running job costs on the UI thread.

Opens a napari window (on a virtual X display of 1600x1000 when none is set),
docks the Train and the Predict dock, and feeds each dock's ``_on_progress`` a
stream of reports as a job would: changing messages and fractions, and (Train)
one epoch report every 10th update. Each update is timed with the event
processing after it (``QApplication.processEvents()``: relayout and repaint,
i.e. what the user's window pays), no job runs. The same for an
:class:`~napari_dlbio._qt.activity.ActivityBar` in napari's activity dock.

Also printed: how busy the idle window's UI thread is, without and with an
ActivityBar open (napari animates an "in progress" GIF while any bar exists).

Under Xvfb Qt composes the napari window (its OpenGL canvas) in software
(llvmpipe) for every flush; that composition, not the docks' own painting, is
most of an update's cost, and it grows with the window's area (``--window``).

Usage: python benchmarks/bench_ui_update.py [--updates 300] [--gap 0.1] [--window 1500x950] [--shot out.png]
Target: mean <= 5 ms per update.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from virtual_display import start_display


def settle(app, seconds: float = 0.3) -> float:
    """Run the event loop for ``seconds``; returns the milliseconds it was busy (in processEvents)."""
    busy, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        app.processEvents()
        busy += time.perf_counter() - t
        time.sleep(0.002)
    return busy * 1000


def timed(app, updates, gap: float, warmup: int = 20) -> np.ndarray:
    """Milliseconds of each ``update()`` plus the event processing it causes (the first ``warmup`` dropped).

    Between updates the event loop runs for ``gap`` seconds, as between a job's
    deliveries (the runner sends at most 10 a second). The gap matters: Qt
    repaints at once (``repaint()``) only when the window's last composition is
    more than a frame (16 ms) old, so back-to-back updates would hide such costs.
    """
    out = []
    for k, update in enumerate(updates):
        t = time.perf_counter()
        update()
        app.processEvents()
        app.processEvents()  # what the first round posted (a relayout's repaints)
        if k >= warmup:
            out.append((time.perf_counter() - t) * 1000)
        settle(app, gap)
    return np.array(out)


def train_updates(w, n: int):
    from napari_dlbio.jobs import Progress

    w._t0 = time.monotonic()
    for i in range(n):
        epoch, step = divmod(i, 10)
        loss = 1.0 / (1 + 0.05 * i)
        p = Progress(i + 1, n, f"epoch {epoch + 1}, step {step + 1}", {"loss": loss})
        epochs = []
        if step == 9:
            metrics = {"epoch": epoch + 1, "train_loss": loss, "val_loss": 1.2 * loss}
            epochs = [Progress(i + 1, n, f"epoch {epoch + 1}: loss {loss:.4f}", metrics, "epoch")]
        yield lambda p=p, epochs=epochs: w._on_progress(p, epochs)


def predict_updates(w, n: int):
    from napari_dlbio.jobs import Progress

    w._current = "nuclei2d (1/2)"
    for i in range(n):
        p = Progress(i + 1, n, f"tile {i + 1}/{n}")
        yield lambda p=p: w._on_progress(p, [])


def activity_updates(bar, n: int):
    for i in range(n):
        epoch, step = divmod(i, 10)
        yield lambda i=i, e=epoch, s=step: bar.update((i + 1) / n, f"epoch {e + 1}, step {s + 1}")


def open_docks(window: tuple[int, int]):
    """A napari window of ``window`` pixels with the 2D sample, the Train and the Predict dock docked."""
    import napari
    from qtpy.QtWidgets import QApplication, QScrollArea

    from napari_dlbio._qt.predict_widget import PredictWidget
    from napari_dlbio._qt.train_widget import TrainWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(*window)  # the window's composition costs more the larger the window is
    app = QApplication.instance()
    viewer.open_sample("napari-dlbio", "nuclei_2d")
    train, predict = TrainWidget(viewer), PredictWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train", area="right")
    viewer.window.add_dock_widget(predict, name="Predict", area="right")
    # As when a job starts: the dock scrolls its progress and loss plot into view.
    for dock, widget in ((train, train.plot), (predict, predict.status)):
        dock.findChild(QScrollArea).ensureWidgetVisible(widget, 0, 10)
    settle(app, 1.0)
    return app, viewer, train, predict


def run(n: int, gap: float, shot: str | None, window: tuple[int, int]) -> tuple[dict, dict]:
    """Milliseconds per update for each row, and the idle window's busy milliseconds per second."""
    from napari_dlbio._qt.activity import ActivityBar

    app, viewer, train, predict = open_docks(window)
    idle = {"window idle": settle(app, 3.0) / 3.0}
    rows = {"Train dock": timed(app, train_updates(train, n), gap)}
    if shot:
        settle(app)
        train.grab().save(shot)
        viewer.window._qt_window.grab().save(shot.replace(".png", "_window.png"))
    rows["Predict dock"] = timed(app, predict_updates(predict, n), gap)
    bar = ActivityBar("Training 'bench'")
    settle(app)
    idle["window idle, ActivityBar open"] = settle(app, 3.0) / 3.0
    rows["ActivityBar"] = timed(app, activity_updates(bar, n), gap)
    viewer.window._qt_window._activity_dialog.show()  # the user opened napari's activity popup
    settle(app)
    rows["ActivityBar, popup shown"] = timed(app, activity_updates(bar, n), gap)
    bar.close()
    bar.close()
    viewer.close()
    return rows, idle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.1, help="seconds between updates (the runner's 0.1)")
    ap.add_argument("--window", default="1500x950", help="napari window size, WIDTHxHEIGHT")
    ap.add_argument("--shot", default=None, help="save a screenshot of the Train dock after its updates (PNG)")
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_DLBIO_HOME", tempfile.mkdtemp(prefix="dlbio-bench-"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")  # before: others' load
    disp = start_display()
    try:
        rows, idle = run(args.updates, args.gap, args.shot, tuple(int(v) for v in args.window.split("x")))
    finally:
        if disp is not None:
            disp.stop()
    print(f"\nUI thread cost per progress update (update + processEvents; window {args.window}, "
          f"{os.cpu_count()} CPUs, load average before {load:.1f})")
    head = f"{'row':<26} {'n':>5} {'mean ms':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    print(head)
    print("-" * len(head))
    for name, ms in rows.items():
        print(f"{name:<26} {len(ms):>5} {ms.mean():>8.2f} {np.median(ms):>7.2f} "
              f"{np.percentile(ms, 99):>7.2f} {ms.max():>7.2f}")
    for name, ms in idle.items():
        print(f"{name}: UI thread busy {ms:.1f} ms per second")
    print("target: mean <= 5 ms per update")


if __name__ == "__main__":
    main()
