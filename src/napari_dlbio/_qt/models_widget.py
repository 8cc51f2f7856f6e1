"""The Models dock: what is in the model store, with each model's metrics and provenance."""

from __future__ import annotations

import json

from qtpy.QtWidgets import QLabel, QPlainTextEdit, QSizePolicy, QVBoxLayout, QWidget

from ..formatting import metrics_html
from .widgets import SavedModelPicker, hint


class ModelsWidget(QWidget):
    def __init__(self, napari_viewer=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.picker = SavedModelPicker()
        lay.addWidget(self.picker)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.summary)
        self.where = hint("")
        lay.addWidget(self.where)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setToolTip("model.json: settings, provenance, metrics, versions")
        lay.addWidget(self.details, 1)
        self.picker.model_changed.connect(self._show)
        self._show(self.picker.info())

    def _show(self, info) -> None:
        from .. import store

        if info is None:
            self.summary.setText("")
            self.where.setText(f"models live in {store.store_root()}")
            self.details.setPlainText("")
            return
        prov = info.provenance or {}
        sources = ", ".join(f"{s.get('image')} + {s.get('labels')}" for s in prov.get("sources", [])) or "?"
        lines = [
            f"<b>{info.name}</b>: {info.backend}, {info.ndim}D, {info.n_channels} channel(s), "
            f"saved {info.created[:16].replace('T', ' ')}",
            f"trained on {sources} ({prov.get('n_items', '?')} annotated item(s), "
            f"{prov.get('n_objects', '?')} objects)",
        ]
        if "fine_tuned_from" in prov:
            lines.append(f"fine-tuned from {prov['fine_tuned_from'].get('name')}")
        self.summary.setText("<br>".join(lines) + "<br>" + metrics_html(info.metrics or {}))
        self.where.setText(str(info.path))
        shown = {k: v for k, v in info.to_json().items() if k not in ("format", "format_version", "history")}
        self.details.setPlainText(json.dumps(shown, indent=2, default=str))
