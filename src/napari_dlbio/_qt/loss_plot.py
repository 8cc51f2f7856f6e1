"""A small live plot of training and validation loss per epoch (QPainter, no matplotlib)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

TRAIN_COLOR = QColor(80, 160, 255)
VAL_COLOR = QColor(255, 150, 50)


class LossPlot(QWidget):
    """Train (blue) and validation (orange) loss against epoch; y on a log scale when it spans > 10x."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.train: list[tuple[float, float]] = []
        self.val: list[tuple[float, float]] = []
        self.best_epoch: int | None = None
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Loss per epoch: training (blue) and validation (orange); lower is better")

    # -- data -------------------------------------------------------------------------
    def clear(self) -> None:
        self.train, self.val, self.best_epoch = [], [], None
        self.update()

    def add(self, epoch: float, train: float | None = None, val: float | None = None) -> None:
        if train is not None and math.isfinite(train):
            self.train.append((float(epoch), float(train)))
        if val is not None and math.isfinite(val):
            self.val.append((float(epoch), float(val)))
        self.update()

    def set_history(self, history: list[dict]) -> None:
        self.train, self.val = [], []
        for h in history:
            self.add(h.get("epoch", len(self.train) + 1), h.get("train_loss"), h.get("val_loss"))

    @property
    def n_points(self) -> int:
        return len(self.train) + len(self.val)

    # -- drawing ---------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        grid = QColor(fg)
        grid.setAlpha(50)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        left, right, top, bottom = fm.horizontalAdvance("0.0000") + 8, 10, fm.height() + 6, fm.height() + 8
        area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))

        pts = self.train + self.val
        p.setPen(QPen(fg))
        if not pts:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss per epoch appears here during training")
            p.end()
            return
        ys = [y for _, y in pts]
        ymin, ymax = min(ys), max(ys)
        log = ymin > 0 and ymax / ymin > 10
        f = (lambda v: math.log10(v)) if log else (lambda v: v)
        lo, hi = f(ymin), f(ymax)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
        pad = 0.06 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        x_max = max(max(x for x, _ in pts), 2.0)
        x_min = 1.0

        def to_px(x: float, y: float) -> QPointF:
            px = area.left() + (x - x_min) / (x_max - x_min) * area.width()
            py = area.bottom() - (f(y) - lo) / (hi - lo) * area.height()
            return QPointF(px, py)

        # Grid and tick labels: round numbers on a linear axis, 2 digits on a log axis.
        for v, label in _ticks(lo, hi, log):
            y = area.bottom() - (v - lo) / (hi - lo) * area.height()
            p.setPen(QPen(grid))
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            p.setPen(QPen(fg))
            p.drawText(QRectF(0, y - fm.height() / 2, left - 4, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        p.setPen(QPen(fg))
        p.drawRect(area)
        p.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), fm.height()),
                   Qt.AlignmentFlag.AlignLeft, "1")
        p.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), fm.height()),
                   Qt.AlignmentFlag.AlignRight, f"epoch {int(x_max)}")

        for series, color in ((self.train, TRAIN_COLOR), (self.val, VAL_COLOR)):
            if not series:
                continue
            pen = QPen(color)
            pen.setWidthF(2.0)
            p.setPen(pen)
            path = QPainterPath(to_px(*series[0]))
            for x, y in series[1:]:
                path.lineTo(to_px(x, y))
            p.drawPath(path)
            p.setBrush(color)
            if len(series) <= 60:
                for x, y in series:
                    p.drawEllipse(to_px(x, y), 2.5, 2.5)
            p.setBrush(Qt.BrushStyle.NoBrush)

        # Legend with the last values, top right.
        items = [("train", TRAIN_COLOR, self.train), ("val", VAL_COLOR, self.val)]
        x = area.right() - 4
        for name, color, series in reversed(items):
            if not series:
                continue
            text = f"{name} {_fmt(series[-1][1])}"
            w = fm.horizontalAdvance(text)
            p.setPen(QPen(color))
            p.drawText(QRectF(x - w, 1, w, fm.height()), Qt.AlignmentFlag.AlignRight, text)
            x -= w + 12
        if log:
            p.setPen(QPen(fg))
            p.drawText(QRectF(2, 1, left + 40, fm.height()), Qt.AlignmentFlag.AlignLeft, "loss (log)")
        else:
            p.setPen(QPen(fg))
            p.drawText(QRectF(2, 1, left + 40, fm.height()), Qt.AlignmentFlag.AlignLeft, "loss")
        p.end()


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100 or a < 0.001:
        return f"{v:.1e}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _ticks(lo: float, hi: float, log: bool, n: int = 4) -> list[tuple[float, str]]:
    """Tick positions (in plot units) and labels between ``lo`` and ``hi``."""
    if log:
        return [(lo + (hi - lo) * k / n, f"{10 ** (lo + (hi - lo) * k / n):.2g}") for k in range(n + 1)]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / mag == 2.5 else 0))
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + 1e-12:
        out.append((v, f"{v:.{decimals}f}"))
        v += step
    return out
