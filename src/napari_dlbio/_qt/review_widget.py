"""The Review dock: a result's objects, least confident first; go to one, keep or delete it.

A thin view over :mod:`napari_dlbio.review`: pick a result labels layer with a
``score`` feature, click an object to centre the view on it (its slice or frame too)
and select its label, keep or delete it (our result layers only, never the user's
own labels), hide the objects under a score threshold (a colormap, the data stay as
they are) and apply the threshold as a new layer ``<name> (cleaned)``.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import review
from .._layers import unique_name
from .results import add_layers
from .runner import notify_error
from .widgets import LayerCombo

STEPS = 100  # slider steps over scores 0..1


class ReviewWidget(QWidget):
    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._watched = None              # the layer whose features events we follow
        self._base: dict[int, object] = {}   # layer id -> its own colormap, restored at threshold 0
        self._build()
        self.layer_box.layer_changed.connect(self._layer_changed)
        self.table.itemSelectionChanged.connect(self._go_to_selected)
        self.keep_btn.clicked.connect(self.keep_selected)
        self.delete_btn.clicked.connect(self.delete_selected)
        self.slider.valueChanged.connect(lambda _: self._threshold_changed())
        self.apply_btn.clicked.connect(self.apply)
        self._layer_changed(self.layer_box.layer())

    # -- layout -------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        form = QFormLayout()
        self.layer_box = LayerCombo(self.viewer, ("labels",), accept=review.has_scores)
        self.layer_box.setToolTip("Result labels layers with per-object scores (Predict, instance models)")
        form.addRow("Result", self.layer_box)
        outer.addLayout(form)
        self.summary = QLabel("no result with scores: predict with an instance model first")
        self.summary.setWordWrap(True)
        outer.addWidget(self.summary)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["label", "score", "area", "checked"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("Objects, least confident first: click one to go there")
        outer.addWidget(self.table, 1)
        outer.addLayout(self._buttons())
        outer.addLayout(self._threshold_row())
        self.apply_btn = QPushButton("Apply threshold → cleaned copy")
        self.apply_btn.setToolTip("A new layer '<name> (cleaned)' without the hidden objects; this one stays")
        outer.addWidget(self.apply_btn)

    def _buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.keep_btn = QPushButton("Keep")
        self.keep_btn.setToolTip("Mark the object as checked: the threshold never hides or removes it")
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.setToolTip("Remove the object from this result layer (not from your own layers)")
        row.addWidget(self.keep_btn)
        row.addWidget(self.delete_btn)
        return row

    def _threshold_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, STEPS)
        self.slider.setToolTip("Hide objects scored under this (the layer's data are not changed)")
        self.threshold_label = QLabel()
        self.threshold_label.setMinimumWidth(110)
        row.addWidget(QLabel("Hide below"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.threshold_label)
        self._show_threshold()
        return row

    # -- state ----------------------------------------------------------------------
    def layer(self):
        return self.layer_box.layer()

    @property
    def threshold(self) -> float:
        return self.slider.value() / STEPS

    def set_threshold(self, value: float) -> None:
        self.slider.setValue(round(value * STEPS))

    def _layer_changed(self, layer) -> None:
        if self._watched is not None:
            self._watched.events.features.disconnect(self._refresh)
        self._watched = layer
        if layer is not None:
            layer.events.features.connect(self._refresh)
        self._refresh()
        self._threshold_changed()

    def _refresh(self, *_args) -> None:
        """The table and summary from the layer's features."""
        layer = self.layer()
        rows = review.rows(layer) if layer is not None else []
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            cells = (str(r.label), f"{r.score:.3f}", str(r.area), "kept" if r.kept else "")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, r.label)
                self.table.setItem(i, j, item)
        self.table.blockSignals(False)
        self._summarise(layer, rows)
        for b in (self.keep_btn, self.delete_btn, self.apply_btn):
            b.setEnabled(layer is not None and review.is_ours(layer))

    def _summarise(self, layer, rows) -> None:
        if layer is None:
            self.summary.setText("no result with scores: predict with an instance model first")
            return
        hidden = len(review.below(layer, self.threshold))
        kept = sum(r.kept for r in rows)
        text = f"{len(rows)} objects · {hidden} hidden (score < {self.threshold:.2f}) · {kept} kept"
        if not review.is_ours(layer):
            text += " · not a napari-dlbio result: read only"
        self.summary.setText(text)

    def selected_label(self) -> int | None:
        items = self.table.selectedItems()
        return int(items[0].data(Qt.ItemDataRole.UserRole)) if items else None

    # -- actions --------------------------------------------------------------------
    def select(self, label: int) -> None:
        """Select the object's row (which centres the view on it)."""
        for i in range(self.table.rowCount()):
            if int(self.table.item(i, 0).data(Qt.ItemDataRole.UserRole)) == label:
                self.table.selectRow(i)
                return

    def _go_to_selected(self) -> None:
        label, layer = self.selected_label(), self.layer()
        if label is not None and layer is not None:
            review.jump(self.viewer, layer, label)
            if self.threshold > 0:
                self._threshold_changed()   # the object under review shows even when hidden

    def keep_selected(self) -> None:
        self._edit(lambda layer, label: review.keep(layer, label))

    def delete_selected(self) -> None:
        self._edit(lambda layer, label: review.delete(layer, [label]))

    def _edit(self, action) -> None:
        label, layer = self.selected_label(), self.layer()
        if label is None or layer is None:
            return
        row = self.table.currentRow()
        try:
            action(layer, label)
        except ValueError as exc:
            notify_error(str(exc), "Review")
            return
        self._threshold_changed()
        if self.table.rowCount():
            self.table.selectRow(min(max(row, 0), self.table.rowCount() - 1))   # on to the next object

    def _threshold_changed(self) -> None:
        self._show_threshold()
        layer = self.layer()
        if layer is None:
            return
        base = self._base.setdefault(id(layer), layer.colormap)
        if self.threshold <= 0:
            layer.colormap = base
        else:
            layer.colormap = review.hiding_colormap(layer, base, self.threshold, self.selected_label())
        self._summarise(layer, review.rows(layer))

    def _show_threshold(self) -> None:
        self.threshold_label.setText(f"{self.threshold:.2f}")

    def apply(self):
        """Add ``<name> (cleaned)``: this layer without the hidden objects. Returns the new layer."""
        layer = self.layer()
        if layer is None:
            return None
        data, meta, kind = review.cleaned(layer, self.threshold)
        meta["name"] = unique_name(meta["name"], [lay.name for lay in self.viewer.layers])
        (new,) = add_layers(self.viewer, [(data, meta, kind)])
        return new
