"""The Evaluate dock's parts: the truth, the candidates checklist, and the results tables."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import store
from .._layers import annotation_summary, layer_data
from ..comparison import Candidate, image_axes
from ..scoreboard import CandidateResult
from .widgets import LayerCombo, _watch_layers, hint

ROLE = Qt.ItemDataRole.UserRole
ERRORS_KEY = "napari_dlbio_errors"   # in the metadata of our error layers, which are no candidates


class TruthBox(QGroupBox):
    """The labels layer with the user's annotations, the image they annotate, and what counts."""

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__("Ground truth", parent)
        form = QFormLayout(self)
        self.labels = LayerCombo(viewer, ("labels", "image"), prefer=("labels",))
        self.labels.setToolTip("Your annotations (a labels layer): only slices/frames with at least one object "
                               "count, as in training. For denoising models: a clean reference image "
                               "(scored by PSNR and SSIM)")
        self.image = LayerCombo(viewer, ("image",), none_text="(none: compare labels layers only)")
        self.image.setToolTip("The image the labels annotate: models are applied to its annotated slices")
        self.summary = hint("")
        form.addRow("Truth", self.labels)
        form.addRow("Image", self.image)
        form.addRow(self.summary)
        for combo in (self.labels, self.image):
            combo.layer_changed.connect(self.update_summary)
        self.update_summary()

    def update_summary(self, *_args) -> None:
        layer = self.labels.layer()
        if layer is None:
            self.summary.setText("add or choose a labels layer with your annotations")
            return
        if self.is_reference():
            self.summary.setText("clean reference image: denoising models and image layers are scored on "
                                 "every slice by PSNR and SSIM")
            return
        try:
            text = annotation_summary(layer_data(layer), self.image_axes() or _label_axes(layer)).text()
        except ValueError as exc:
            text = str(exc)
        self.summary.setText(text.replace("to train on it", "to evaluate on it"))


    def is_reference(self) -> bool:
        """The truth is a clean image (restoration), not labels."""
        return isinstance(self.labels.layer(), Image)

    def image_axes(self) -> str:
        """The image's axes as the labels tell them ("" without an image)."""
        img, lab = self.image.layer(), self.labels.layer()
        if img is None or lab is None:
            return ""
        return image_axes(tuple(layer_data(img).shape), tuple(layer_data(lab).shape), bool(img.rgb))


def _label_axes(layer) -> str:
    from ..comparison import _label_axes as guess

    return guess(tuple(layer_data(layer).shape))


class CandidatesBox(QGroupBox):
    """Saved models, model folders and labels layers, each with a check box."""

    def __init__(self, viewer, truth_name=lambda: None, parent: QWidget | None = None,
                 reference=lambda: False) -> None:
        super().__init__("Candidates", parent)
        self.viewer = viewer
        self.truth_name = truth_name      # the truth layer is not offered as a candidate
        self.reference = reference        # a clean reference image: image layers are the candidates
        outer = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.setMinimumHeight(80)
        self.list.setMaximumHeight(120)
        self.list.setToolTip("Tick the models and labels layers to compare with the ground truth")
        outer.addWidget(self.list)
        row = QHBoxLayout()
        self.add_folder = QPushButton("Add model folder…")
        self.add_folder.setToolTip("A napari-dlbio model folder, or a StarDist/Cellpose model on disk")
        self.refresh_btn = QPushButton("Refresh")
        row.addWidget(self.add_folder, 1)
        row.addWidget(self.refresh_btn)
        outer.addLayout(row)
        self.add_folder.clicked.connect(self._browse)
        self.refresh_btn.clicked.connect(self.refresh)
        _watch_layers(viewer, self, self.refresh)
        self.refresh()

    def _entries(self) -> list[tuple[str, tuple]]:
        """(text, (kind, value, name)) of every candidate on offer, added models first."""
        out = [(self.list.item(i).text(), self.list.item(i).data(ROLE)) for i in range(self.list.count())
               if self.list.item(i).data(ROLE)[0] == "added"]
        out += [(f"model: {i.name} ({i.backend})", ("model", str(i.path), i.name))
                for i in store.list_models()]
        truth, kind = self.truth_name(), (Image if self.reference() else Labels)
        out += [(f"layer: {lay.name}", ("layer", lay.name, lay.name)) for lay in self.viewer.layers
                if isinstance(lay, kind) and lay.name != truth and ERRORS_KEY not in lay.metadata]
        return out

    def refresh(self, *_args) -> None:
        ticked = set(self.ticked_keys())
        entries = self._entries()   # before clearing: the models added by hand are read from the list
        self.list.clear()
        for text, data in entries:
            item = QListWidgetItem(text)
            item.setData(ROLE, data)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if data[1] in ticked else Qt.CheckState.Unchecked)
            self.list.addItem(item)

    def ticked_keys(self) -> list[str]:
        return [self.list.item(i).data(ROLE)[1] for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def tick(self, *values: str) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(ROLE)[1] in values or item.data(ROLE)[2] in values:
                item.setCheckState(Qt.CheckState.Checked)

    def add_model(self, name_or_path: str) -> None:
        """A model by store name, folder or ``BACKEND:NAME`` (pretrained), ticked, at the top of the list."""
        name = Candidate.parse(name_or_path).name
        for i in range(self.list.count()):
            if list(self.list.item(i).data(ROLE)[1:]) == [str(name_or_path), name]:
                self.list.item(i).setCheckState(Qt.CheckState.Checked)
                return
        item = QListWidgetItem(f"model: {name}")
        item.setData(ROLE, ("added", str(name_or_path), name))
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        self.list.insertItem(0, item)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.add_model(folder)

    def candidates(self, truth_name: str) -> list[Candidate]:
        """The ticked candidates (labels layers copied now: the user may go on painting)."""
        out = []
        for i in range(self.list.count()):
            item = self.list.item(i)
            kind, value, name = item.data(ROLE)
            if item.checkState() != Qt.CheckState.Checked or (kind == "layer" and value == truth_name):
                continue
            if kind == "layer":
                layer = self.viewer.layers[value]
                if self.reference():
                    out.append(Candidate.of_labels(name, np.array(layer_data(layer), np.float32)))
                    continue
                if not isinstance(layer, Labels):
                    kind = layer.__class__.__name__.lower()
                    raise ValueError(f"candidate {value!r} is an {kind} layer, not labels")
                out.append(Candidate.of_labels(name, np.array(layer_data(layer))))
            else:
                out.append(replace(Candidate.parse(value), name=name))
        return out


def _header(metric: str) -> str:
    """Short column titles: AP@0.5, AP@0.75, F1 (at 0.5), PQ (at 0.5); the full name is the tooltip."""
    return {"AP@0.50": "AP@0.5", "F1@0.50": "F1", "precision@0.50": "precision",
            "recall@0.50": "recall"}.get(metric, metric)


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.3f}"


class ResultsTable(QTableWidget):
    """Rows of metrics, read-only, one selected at a time."""

    def __init__(self, first: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.first = first
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(90)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def fill(self, columns: list[str], rows: list[tuple[str, dict, str]]) -> None:
        """``rows``: (name, metrics, note); ``columns``: the metrics shown after the name.

        The note (failures) is the name's tooltip, so that the table fits a narrow dock.
        """
        self.clear()
        self.setColumnCount(len(columns) + 1)
        self.setHorizontalHeaderLabels([self.first, *(_header(c) for c in columns)])
        self.setRowCount(len(rows))
        for r, (name, values, note) in enumerate(rows):
            failed = bool(note) and all(math.isnan(values[c]) for c in columns)
            first = QTableWidgetItem(f"{name} (failed)" if failed else name)
            first.setData(ROLE, name)
            first.setToolTip(f"{name}: {note}" if note else name)
            self.setItem(r, 0, first)
            for c, col in enumerate(columns, start=1):
                item = QTableWidgetItem(_fmt(values[col]))
                item.setToolTip(f"{name}, {col}: {_fmt(values[col])}")
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.setItem(r, c, item)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # As tall as its rows (up to 8), so that the plot below is not pushed out of sight.
        rows_h = (sum(self.rowHeight(r) for r in range(min(len(rows), 8)))
                  or self.verticalHeader().defaultSectionSize())
        self.setFixedHeight(header.sizeHint().height() + rows_h + 2 * self.frameWidth())

    def selected_name(self) -> str | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        return self.item(rows[0].row(), 0).data(ROLE) if rows else None


def candidate_note(c: CandidateResult) -> str:
    if c.error:
        return c.error
    failed = len(c.failures)
    return f"{len(c.scored)} item(s)" + (f", {failed} failed" if failed else "")
