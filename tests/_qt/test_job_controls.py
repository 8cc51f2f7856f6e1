"""The job display's cheap updates: the status line, the progress bar and the loss plot in a napari dock."""

import pytest
from qtpy.QtCore import QEvent, QObject

pytestmark = pytest.mark.gui

LONG = "epoch 3, step 17 · loss 0.1234 · 12 s — and a much longer message that does not fit" + " at all" * 40


class Events(QObject):
    """Counts layout requests and paints per object name while installed on the application."""

    def __init__(self):
        super().__init__()
        self.layouts, self.paints = [], []

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.LayoutRequest:
            self.layouts.append(type(obj).__name__)
        elif event.type() == QEvent.Type.Paint:
            self.paints.append(type(obj).__name__)
        return False


def _docked(viewer, qtbot):
    from napari_dlbio._qt.job_controls import JobControls

    controls = JobControls("Run", "run", "cancel", "idle")
    with qtbot.waitExposed(controls):
        viewer.window.add_dock_widget(controls, name="job")
    return controls


def test_status_line_elides_and_keeps_the_full_text(make_napari_viewer, qtbot):
    controls = _docked(make_napari_viewer(show=True), qtbot)
    status = controls.status
    status.setText(LONG)
    assert status.text() == LONG
    lines = status.lines()
    assert len(lines) == 2 and lines[1].endswith("…")
    assert status.toolTip() == LONG
    fm = status.label.fontMetrics()
    assert all(fm.horizontalAdvance(line) <= status.label.contentsRect().width() for line in lines)
    assert status.height() >= 2 * fm.lineSpacing()  # two whole lines, nothing cut at the bottom
    status.setText("done")
    assert status.lines() == ["done"] and status.toolTip() == ""


def test_updates_neither_relayout_nor_repaint_the_dock(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QApplication

    controls = _docked(make_napari_viewer(show=True), qtbot)
    app = QApplication.instance()
    qtbot.wait(50)
    events = Events()
    app.installEventFilter(events)
    try:
        for i in range(1, 6):
            controls.progress.setValue(100 * i)
            controls.status.setText(LONG[: 20 * i])
            app.processEvents()
        before = len(events.paints)
        controls.status.setText(controls.status.text())  # the same text and value: no repaint at all
        controls.progress.setValue(controls.progress.value())
        app.processEvents()
    finally:
        app.removeEventFilter(events)
    assert set(events.layouts) <= {"StatusLine"}  # it has no layout: the relayout stops there
    assert "JobProgress" in events.paints and "QLabel" in events.paints
    assert len(events.paints) == before


def test_progress_bar_never_repaints_in_set_value(make_napari_viewer, qtbot):
    controls = _docked(make_napari_viewer(show=True), qtbot)
    events = Events()
    qtbot.wait(50)  # the window's last composition is older than a frame: Qt would repaint now
    controls.progress.installEventFilter(events)
    controls.progress.setValue(700)
    assert events.paints == []  # not inside setValue ...
    qtbot.waitUntil(lambda: bool(events.paints), timeout=1000)  # ... but soon after
    assert controls.progress.value() == 700


def test_loss_plot_draws_once_per_change(qtbot):
    from napari_dlbio._qt.loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(300, 160)
    with qtbot.waitExposed(plot):
        plot.show()
    drawn = []
    original = plot._draw
    plot._draw = lambda p: (drawn.append(1), original(p))
    plot.extend([(1, 1.0, 1.2), (2, 0.5, float("nan")), (3, None, 0.4)])
    assert plot.n_points == 4  # the NaN and the Nones are left out
    plot.repaint()
    plot.repaint()  # nothing changed: the picture is copied, not drawn again
    assert len(drawn) == 1
    plot.extend([(4, None, None)])  # nothing to add: no repaint
    plot.add(4, 0.3, 0.35)
    plot.repaint()
    assert len(drawn) == 2
