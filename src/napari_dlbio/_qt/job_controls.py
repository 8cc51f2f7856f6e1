"""What every dock's job shows: Run and Cancel, a progress bar and a status line, all cheap to update.

In a napari window every repaint recomposes the whole window with its OpenGL
canvas, so these widgets are built to cost one repaint per progress report and
no relayout of the dock.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtGui import QFontMetrics
from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from .widgets import hint

# What napari's style sheet changes on the status label once the dock is shown: font, padding.
_RESTYLED = (QEvent.Type.FontChange, QEvent.Type.StyleChange, QEvent.Type.ContentsRectChange)


class StatusLine(QWidget):
    """A job's status: a gray hint in at most :data:`LINES` lines, elided; the full text is the tooltip.

    A word-wrapped QLabel in the dock's layout relayouted the dock's whole scroll
    area on every progress report: its ``setText`` calls ``updateGeometry``, which
    invalidates every layout up to the scroll area. Here the label sits in this
    fixed-height holder *without* a layout (placed by :meth:`resizeEvent`), so the
    invalidation stops here; the text is broken and elided by :func:`wrap_text`.
    """

    LINES = 2

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self._text = ""
        self.label = hint("")
        self.label.setParent(self)
        self.label.setWordWrap(False)  # the lines are ours
        self.label.setTextFormat(Qt.TextFormat.PlainText)  # an error message may hold "<...>"
        # Centred vertically: QLabel adds its indent to the top of top-aligned text too.
        self.label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.label.installEventFilter(self)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._fit_height()
        self.setText(text)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        """Show ``text`` (a label's method name: the docks treat the status as a label)."""
        text = str(text)
        if text != self._text:  # the same words again: no repaint at all
            self._text = text
            self._wrap()

    def lines(self) -> list[str]:
        """The lines as shown (the last one elided when the text is longer)."""
        return self.label.text().split("\n") if self.label.text() else []

    def _fit_height(self) -> None:
        lab, fm = self.label, self.label.fontMetrics()
        margins = lab.contentsMargins()
        text_height = fm.height() + (self.LINES - 1) * fm.lineSpacing()
        self.setFixedHeight(text_height + margins.top() + margins.bottom() + 2 * lab.margin())

    def _wrap(self) -> None:
        lines, cut = wrap_text(self._text, self.label.fontMetrics(), self._text_width(), self.LINES)
        self.label.setText("\n".join(lines))
        self.setToolTip(self._text if cut else "")

    def _text_width(self) -> int:
        """The label's width for text: its contents less margin and indent, as QLabel lays text out."""
        lab = self.label
        indent = lab.indent()
        if indent < 0 and lab.frameWidth():
            indent = lab.fontMetrics().horizontalAdvance("x") // 2 - lab.margin()
        return max(1, lab.contentsRect().width() - 2 * lab.margin() - max(0, indent))

    def sizeHint(self) -> QSize:
        return QSize(0, self.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(0, self.height())

    def resizeEvent(self, event) -> None:
        self.label.setGeometry(self.rect())
        self._wrap()
        super().resizeEvent(event)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.label and event.type() in _RESTYLED:
            self._fit_height()
            self._wrap()
        return False


def wrap_text(text: str, fm: QFontMetrics, width: int, max_lines: int) -> tuple[list[str], bool]:
    """``text`` broken at spaces into lines of at most ``width`` pixels; (lines, whether cut).

    The last allowed line takes the rest, elided with "…"; so is a single word
    wider than a line.
    """
    words, lines = text.split(), []
    while words and len(lines) < max_lines - 1:
        n = 1
        while n < len(words) and fm.horizontalAdvance(" ".join(words[: n + 1])) <= width:
            n += 1
        lines.append(" ".join(words[:n]))
        words = words[n:]
    if words:
        lines.append(" ".join(words))
    shown = [fm.elidedText(line, Qt.TextElideMode.ElideRight, width) for line in lines]
    return shown, shown != lines


class JobProgress(QProgressBar):
    """A 0..1000 progress bar whose ``setValue`` never repaints right away.

    QProgressBar's own ``setValue`` calls ``repaint()``. In a napari window (its
    OpenGL canvas makes Qt composite the whole window for every flush) that is
    a composition of its own, on top of the one for the status line changed just
    after it: two per progress report instead of one. Here the bar schedules an
    ``update()``, which Qt merges with the status line's into one flush.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setRange(0, 1000)
        self.setValue(0)
        self.setTextVisible(False)

    def setValue(self, value: int) -> None:
        if value == self.value():
            return
        self.setUpdatesEnabled(False)  # Qt's repaint() does nothing now
        super().setValue(value)
        self.setUpdatesEnabled(True)   # ... and this schedules the update() instead


class JobControls(QWidget):
    """Run and Cancel buttons, a progress bar and a status line: what every dock's job shows."""

    def __init__(self, run_text: str, run_tip: str, cancel_tip: str, status: str, parent=None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        self.run_btn = QPushButton(run_text)
        self.run_btn.setToolTip(run_tip)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip(cancel_tip)
        self.cancel_btn.setEnabled(False)
        buttons.addWidget(self.run_btn, 1)
        buttons.addWidget(self.cancel_btn)
        outer.addLayout(buttons)
        self.progress = JobProgress()
        outer.addWidget(self.progress)
        # Long messages are elided within the dock instead of widening it or growing it.
        self.status = StatusLine(status)
        outer.addWidget(self.status)
