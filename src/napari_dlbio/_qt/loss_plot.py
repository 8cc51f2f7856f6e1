"""A small live plot of training and validation loss per epoch (QPainter, no matplotlib)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qtpy.QtCore import QEvent, QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPixmap
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
        self._picture: QPixmap | None = None  # the last drawing; None when it must be redrawn
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Loss per epoch: training (blue) and validation (orange); lower is better")

    # -- data -------------------------------------------------------------------------
    def clear(self) -> None:
        self.train, self.val, self.best_epoch = [], [], None
        self._changed()

    def add(self, epoch: float, train: float | None = None, val: float | None = None) -> None:
        self.extend([(epoch, train, val)])

    def extend(self, points) -> None:
        """Add ``(epoch, train, val)`` points (a loss may be None); one repaint for all of them."""
        added = False
        for epoch, train, val in points:
            for series, v in ((self.train, train), (self.val, val)):
                if v is not None and math.isfinite(v):
                    series.append((float(epoch), float(v)))
                    added = True
        if added:
            self._changed()

    def set_history(self, history: list[dict]) -> None:
        self.train, self.val = [], []
        self.extend([(h.get("epoch", k + 1), h.get("train_loss"), h.get("val_loss"))
                     for k, h in enumerate(history)])
        self._changed()  # also for an empty history, which extend() leaves alone

    @property
    def n_points(self) -> int:
        return len(self.train) + len(self.val)

    def _changed(self) -> None:
        self._picture = None
        self.update()

    # -- drawing ---------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        self._picture = None
        super().resizeEvent(event)

    def changeEvent(self, event) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._picture = None  # the colors and the font are drawn into the picture
        super().changeEvent(event)

    def paintEvent(self, event) -> None:
        """The plot drawn once per change of data, size or style, and copied from then on.

        Other repaints (a tooltip or the scroll area uncovering it, the dock's
        neighbours) then cost a copy, not the axes, ticks, curves and legend again.
        """
        if self.width() <= 0 or self.height() <= 0:
            return
        dpr = self.devicePixelRatioF()
        if self._picture is None or self._picture.devicePixelRatio() != dpr:
            self._picture = QPixmap(self.size() * dpr)
            self._picture.setDevicePixelRatio(dpr)
            self._picture.fill(Qt.GlobalColor.transparent)
            p = QPainter(self._picture)
            self._draw(p)
            p.end()
        p = QPainter(self)
        p.drawPixmap(0, 0, self._picture)
        p.end()

    def _draw(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        p.setPen(QPen(fg))
        if not self.train and not self.val:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss per epoch appears here during training")
            return
        left, right, top, bottom = fm.horizontalAdvance("0.0000") + 8, 10, fm.height() + 6, fm.height() + 8
        area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        scale = _Scale.fit(self.train + self.val, area)
        self._draw_axes(p, scale, fg, left)
        for series, color in ((self.train, TRAIN_COLOR), (self.val, VAL_COLOR)):
            _draw_series(p, scale, series, color)
        self._draw_legend(p, scale, fg, left)

    def _draw_axes(self, p: QPainter, scale: _Scale, fg: QColor, left: float) -> None:
        """Grid and tick labels (round numbers on a linear axis, 2 digits on a log axis), frame, epochs."""
        fm, area = p.fontMetrics(), scale.area
        grid = QColor(fg)
        grid.setAlpha(50)
        for v, label in _ticks(scale.lo, scale.hi, scale.log):
            y = scale.y_px(v)
            p.setPen(QPen(grid))
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            p.setPen(QPen(fg))
            p.drawText(QRectF(0, y - fm.height() / 2, left - 4, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        p.setPen(QPen(fg))
        p.drawRect(area)
        below = QRectF(area.left(), area.bottom() + 2, area.width(), fm.height())
        p.drawText(below, Qt.AlignmentFlag.AlignLeft, "1")
        p.drawText(below, Qt.AlignmentFlag.AlignRight, f"epoch {int(scale.x_max)}")

    def _draw_legend(self, p: QPainter, scale: _Scale, fg: QColor, left: float) -> None:
        """The last value of each series, top right; the axis name, top left."""
        fm = p.fontMetrics()
        x = scale.area.right() - 4
        for name, color, series in (("val", VAL_COLOR, self.val), ("train", TRAIN_COLOR, self.train)):
            if not series:
                continue
            text = f"{name} {_fmt(series[-1][1])}"
            w = fm.horizontalAdvance(text)
            p.setPen(QPen(color))
            p.drawText(QRectF(x - w, 1, w, fm.height()), Qt.AlignmentFlag.AlignRight, text)
            x -= w + 12
        p.setPen(QPen(fg))
        p.drawText(QRectF(2, 1, left + 40, fm.height()), Qt.AlignmentFlag.AlignLeft,
                   "loss (log)" if scale.log else "loss")


@dataclass(frozen=True)
class _Scale:
    """Epochs 1..x_max and losses lo..hi (log10 units on a log axis) onto the plot area."""

    area: QRectF
    lo: float
    hi: float
    log: bool
    x_max: float
    x_min: float = 1.0

    @classmethod
    def fit(cls, pts: list[tuple[float, float]], area: QRectF) -> _Scale:
        ys = [y for _, y in pts]
        ymin, ymax = min(ys), max(ys)
        log = ymin > 0 and ymax / ymin > 10
        lo, hi = (math.log10(ymin), math.log10(ymax)) if log else (ymin, ymax)
        if hi - lo < 1e-12:
            # One value (or a flat curve): a band around it instead of a zero-height axis.
            lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
        pad = 0.06 * (hi - lo)
        return cls(area, lo - pad, hi + pad, log, max(max(x for x, _ in pts), 2.0))

    def y_px(self, v: float) -> float:
        """Pixel row of ``v`` in axis units (log10 of the loss on a log axis)."""
        return self.area.bottom() - (v - self.lo) / (self.hi - self.lo) * self.area.height()

    def to_px(self, x: float, y: float) -> QPointF:
        px = self.area.left() + (x - self.x_min) / (self.x_max - self.x_min) * self.area.width()
        return QPointF(px, self.y_px(math.log10(y) if self.log else y))


def _draw_series(p: QPainter, scale: _Scale, series: list[tuple[float, float]], color: QColor) -> None:
    """A loss curve; dots on the epochs while they are few enough to tell apart."""
    if not series:
        return
    pen = QPen(color)
    pen.setWidthF(2.0)
    p.setPen(pen)
    path = QPainterPath(scale.to_px(*series[0]))
    for x, y in series[1:]:
        path.lineTo(scale.to_px(x, y))
    p.drawPath(path)
    p.setBrush(color)
    if len(series) <= 60:
        for x, y in series:
            p.drawEllipse(scale.to_px(x, y), 2.5, 2.5)
    p.setBrush(Qt.BrushStyle.NoBrush)


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
