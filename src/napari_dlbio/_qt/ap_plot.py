"""AP against the IoU threshold, one curve per candidate (QPainter, like the loss plot: no matplotlib)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

# Distinct on napari's dark and light themes (matplotlib's "tab10" hues).
COLORS = [QColor(c) for c in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                              "#7f7f7f", "#bcbd22", "#17becf")]


class APPlot(QWidget):
    """Mean AP (y, 0..1) at each IoU threshold (x), a legend of the candidates at the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thresholds: list[float] = []
        self.curves: list[tuple[str, list[float]]] = []
        self.setMinimumHeight(190)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("AP = TP / (TP + FP + FN) against the IoU a match needs; higher is better, "
                        "and a curve that stays up at high IoU means accurate outlines")

    def set_curves(self, thresholds, curves: list[tuple[str, list[float]]]) -> None:
        """``curves``: ``(candidate, AP at each threshold)``, drawn in this order (best first)."""
        self.thresholds = [float(t) for t in thresholds]
        self.curves = [(name, [float(v) for v in ys]) for name, ys in curves]
        self.update()

    def color(self, k: int) -> QColor:
        return COLORS[k % len(COLORS)]

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().windowText().color()
        fm = p.fontMetrics()
        left = fm.horizontalAdvance("0.0") + 10
        area = QRectF(left, 8, self.width() - left - 10, self.height() - 2 * fm.height() - 14)
        if area.width() < 20 or area.height() < 20:
            return
        self._axes(p, area, fg, fm)
        for k, (_, ys) in enumerate(self.curves):
            self._curve(p, area, ys, self.color(k))
        self._legend(p, area, fm)
        p.end()

    def _xy(self, area: QRectF, t: float, ap: float) -> QPointF:
        t0, t1 = (self.thresholds[0], self.thresholds[-1]) if len(self.thresholds) > 1 else (0.5, 0.95)
        x = area.left() + (t - t0) / (t1 - t0) * area.width()
        return QPointF(x, area.bottom() - ap * area.height())

    def _axes(self, p: QPainter, area: QRectF, fg: QColor, fm) -> None:
        grid = QColor(fg)
        grid.setAlpha(50)
        for v in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = area.bottom() - v * area.height()
            p.setPen(QPen(grid, 1))
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            p.setPen(fg)
            if v in (0.0, 0.5, 1.0):
                p.drawText(QRectF(0, y - fm.height() / 2, area.left() - 4, fm.height()),
                           int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), f"{v:.1f}")
        for t in (0.5, 0.6, 0.7, 0.8, 0.9):
            x = self._xy(area, t, 0).x()
            p.drawText(QRectF(x - 20, area.bottom() + 2, 40, fm.height()), int(Qt.AlignmentFlag.AlignCenter),
                       f"{t:.1f}")
        p.drawText(QRectF(area.left(), area.bottom() + fm.height() + 2, area.width(), fm.height()),
                   int(Qt.AlignmentFlag.AlignCenter), "IoU threshold")
        p.drawText(QRectF(area.left() + 4, area.top() + 2, 40, fm.height()),
                   int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop), "AP")
        p.setPen(QPen(fg, 1))
        p.drawRect(area)

    def _curve(self, p: QPainter, area: QRectF, ys: list[float], color: QColor) -> None:
        path, started = QPainterPath(), False
        p.setPen(QPen(color, 2))
        p.setBrush(color)
        for t, v in zip(self.thresholds, ys):
            if not math.isfinite(v):
                started = False
                continue
            pt = self._xy(area, t, v)
            path.lineTo(pt) if started else path.moveTo(pt)
            started = True
            p.drawEllipse(pt, 2.5, 2.5)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(path)

    def _legend(self, p: QPainter, area: QRectF, fm) -> None:
        """Inside the axes at the top right, where AP curves (falling with the threshold) rarely are."""
        if not self.curves:
            return
        width = min(area.width() * 0.6, max(fm.horizontalAdvance(n) for n, _ in self.curves) + 32)
        n = min(len(self.curves), max(1, int((area.height() - 8) // (fm.height() + 2))))
        box = QRectF(area.right() - width - 4, area.top() + 4, width, n * (fm.height() + 2) + 4)
        bg = QColor(self.palette().window().color())
        bg.setAlpha(210)
        p.fillRect(box, bg)
        y = box.top() + 2
        for k, (name, _) in enumerate(self.curves[:n]):
            p.setPen(QPen(self.color(k), 3))
            mid = y + fm.height() / 2
            p.drawLine(QPointF(box.left() + 4, mid), QPointF(box.left() + 16, mid))
            p.setPen(self.palette().windowText().color())
            text = fm.elidedText(name, Qt.TextElideMode.ElideMiddle, int(box.width() - 22))
            p.drawText(QPointF(box.left() + 20, y + fm.ascent()), text)
            y += fm.height() + 2
