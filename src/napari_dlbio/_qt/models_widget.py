"""The Models dock: what is in the model store, with each model's metrics and provenance."""

from __future__ import annotations

import json

from qtpy.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

from .widgets import SavedModelPicker, hint


class ModelsWidget(QWidget):
    def __init__(self, napari_viewer=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.picker = SavedModelPicker()
        lay.addWidget(self.picker)
        self.where = hint("")
        lay.addWidget(self.where)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        lay.addWidget(self.details, 1)
        self.picker.model_changed.connect(self._show)
        self._show(self.picker.info())

    def _show(self, info) -> None:
        from .. import store

        if info is None:
            self.where.setText(f"models live in {store.store_root()}")
            self.details.setPlainText("")
            return
        self.where.setText(str(info.path))
        shown = {k: v for k, v in info.to_json().items() if k not in ("format", "format_version", "history")}
        shown["epochs trained"] = len(info.history)
        self.details.setPlainText(json.dumps(shown, indent=2, default=str))
