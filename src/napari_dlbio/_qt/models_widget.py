"""The Models dock: the model library.

The saved models of the store, and for the selected one a card (backend, training
data, validation metrics, date, training time, settings) with actions: rename,
duplicate, delete, open its folder, evaluate it on the user's labels, export it.
The list follows the store (a model saved by the Train dock or the command line
appears by itself) and keeps the selection. Store changes go through
:mod:`napari_dlbio.store_actions`; this dock only asks and shows.
"""

from __future__ import annotations

import html

from qtpy.QtCore import Qt, QTimer, QUrl
from qtpy.QtGui import QDesktopServices
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QWidget,
)

from ..formatting import describe_error, metric_parts
from .model_card import ModelCard, backend_title, when
from .widgets import describe_model, hint, scroll_body

EXPORT_TIP = ("Write this model as a bioimage.io model zip (weights, test image, documentation): it opens "
              "in napari-dlbio (Predict/Train: 'Zip…'), deepImageJ, ilastik and the BioImage Model Zoo.")
NO_EXPORT_TIP = "{title} models cannot be exported to bioimage.io: share the model's folder ('Open folder')."
EVALUATE_TIP = ("Open the Evaluate dock with this model as a candidate, to score it against a labels "
                "layer you annotated (only annotated slices count).")


class ModelsWidget(QWidget):
    WATCH_MS = 1500  # how often the list checks the store for changes made elsewhere

    def __init__(self, napari_viewer=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        body = scroll_body(self)
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setWordWrap(True)
        body.addWidget(self.list)
        body.addWidget(self._make_actions())
        self.status = hint("")  # what the last action did (or why it failed)
        self.status.setVisible(False)
        body.addWidget(self.status)
        self.card = ModelCard()
        body.addWidget(self.card)
        body.addStretch(1)
        self._stamp: object = ()
        self._runner = None   # the export job's runner, made by the first export
        self._shown: list[tuple[str, str]] | None = None
        self.list.currentRowChanged.connect(lambda _: self._show())
        self.refresh()
        self._watch = QTimer(self)  # a child timer: it dies with the dock
        self._watch.setInterval(self.WATCH_MS)
        self._watch.timeout.connect(self._follow_store)
        self._watch.start()

    def _make_actions(self) -> QWidget:
        box = QWidget()
        grid = QGridLayout(box)
        grid.setContentsMargins(0, 0, 0, 0)
        self.rename_btn = QPushButton("Rename…")
        self.duplicate_btn = QPushButton("Duplicate…")
        self.delete_btn = QPushButton("Delete…")
        self.open_btn = QPushButton("Open folder")
        self.evaluate_btn = QPushButton("Evaluate on the current labels")
        self.export_btn = QPushButton("Export (bioimage.io)")
        self.evaluate_btn.setToolTip(EVALUATE_TIP)
        self.open_btn.setToolTip("Show the model's folder (weights and model.json) in the file manager")
        self.delete_btn.setToolTip("Delete this model and its folder (asks first)")
        for i, (btn, slot) in enumerate([(self.rename_btn, self.rename), (self.duplicate_btn, self.duplicate),
                                         (self.delete_btn, self.delete), (self.open_btn, self.open_folder)]):
            grid.addWidget(btn, i // 2, i % 2)
            btn.clicked.connect(slot)
        grid.addWidget(self.evaluate_btn, 2, 0, 1, 2)
        grid.addWidget(self.export_btn, 3, 0, 1, 2)
        self.evaluate_btn.clicked.connect(self.evaluate)
        self.export_btn.clicked.connect(self.export)
        return box

    # -- the list ---------------------------------------------------------------------------
    def refresh(self, select: str | None = None) -> None:
        """Reload the store's models; keep the selected one (or select ``select``)."""
        from .. import store

        self._stamp = store.stamp()
        infos = store.list_models()
        current = select or (self.info().name if self.info() is not None else None)
        shown = [(i.name, i.created) for i in infos]
        if shown == self._shown and select is None:
            return
        self._shown = shown
        self.list.blockSignals(True)
        self.list.clear()
        for info in infos:
            self._add_row(info)
        self._fit_list()
        names = [i.name for i in infos]
        self.list.setCurrentRow(names.index(current) if current in names else (0 if names else -1))
        self.list.blockSignals(False)
        self._show()

    def _add_row(self, info) -> None:
        # A label per row: the name in bold over a grey line, which plain items cannot do.
        item = QListWidgetItem()
        item.setData(_INFO_ROLE, info)
        item.setToolTip(describe_model(info))
        label = QLabel(_list_text(info))
        label.setContentsMargins(4, 2, 4, 2)
        label.setToolTip(describe_model(info))
        item.setSizeHint(label.sizeHint())
        self.list.addItem(item)
        self.list.setItemWidget(item, label)

    def _fit_list(self) -> None:
        """As tall as its rows, up to five; it scrolls beyond. Rows are measured again once
        napari's style sheet (its font size) applies: see :meth:`showEvent`."""
        for r in range(self.list.count()):
            item = self.list.item(r)
            item.setSizeHint(self.list.itemWidget(item).sizeHint())
        rows = [self.list.sizeHintForRow(r) for r in range(min(self.list.count(), 5))]
        self.list.setFixedHeight(max(sum(rows), 40) + 2 * self.list.frameWidth() + 2)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._fit_list()

    def _follow_store(self) -> None:
        from .. import store

        if store.stamp() != self._stamp:
            self.refresh()

    def info(self):
        item = self.list.currentItem()
        return item.data(_INFO_ROLE) if item is not None else None

    def names(self) -> list[str]:
        """The models listed, in order (newest first)."""
        return [self.list.item(r).data(_INFO_ROLE).name for r in range(self.list.count())]

    def select(self, name: str) -> None:
        for r in range(self.list.count()):
            if self.list.item(r).data(_INFO_ROLE).name == name:
                self.list.setCurrentRow(r)

    def _show(self) -> None:
        from .. import store

        info = self.info()
        self.card.show_info(info, "No saved models yet: train one in the Train dock (or with "
                                  f"<code>napari-dlbio train</code>).<br>Models live in {store.store_root()}.")
        for btn in (self.rename_btn, self.duplicate_btn, self.delete_btn, self.open_btn):
            btn.setEnabled(info is not None)
        self.evaluate_btn.setEnabled(info is not None and self.viewer is not None)
        exportable = info is not None and _exportable(info.backend)
        self.export_btn.setEnabled(exportable and not self._exporting())
        self.export_btn.setToolTip(EXPORT_TIP if exportable or info is None
                                   else NO_EXPORT_TIP.format(title=backend_title(info.backend)))

    # -- actions ----------------------------------------------------------------------------
    def rename(self) -> None:
        info = self.info()
        new = self._ask_name("Rename model", f"New name for {info.name}:", info.name)
        if new is not None and new != info.name:
            self._act(lambda a: a.rename(info.name, new), f"renamed {info.name} to {new}", select=new)

    def duplicate(self) -> None:
        from .. import store_actions

        info = self.info()
        new = self._ask_name("Duplicate model", f"Name of the copy of {info.name}:", store_actions.copy_name(info.name))
        if new is not None:
            self._act(lambda a: a.duplicate(info.name, new), f"copied {info.name} to {new}", select=new)

    def delete(self) -> None:
        info = self.info()
        answer = QMessageBox.question(
            self, "Delete model",
            f"Delete the model '{info.name}'?\n\nIts folder {info.path} (weights and model.json) is removed; "
            "this cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            self._act(lambda a: a.delete(info.name), f"deleted {info.name}")

    def open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.info().path)))

    def evaluate(self) -> None:
        """Open the Evaluate dock (napari's own dock, so it is shared) with this model as a candidate."""
        info = self.info()
        try:
            _, widget = self.viewer.window.add_plugin_dock_widget("napari-dlbio", "Evaluate")
            widget.add_model_candidate(str(info.path))
        except Exception as exc:  # noqa: BLE001 - napari's lookup errors differ between versions
            self._say(f"could not open the Evaluate dock: {describe_error(exc)}", error=True)
            return
        self._say(f"{info.name} added to the Evaluate dock's candidates")

    def export(self) -> None:
        """Ask where, then write the zip in the job process (torch never loads in napari's)."""
        from pathlib import Path

        from qtpy.QtWidgets import QFileDialog

        info = self.info()
        path, _ = QFileDialog.getSaveFileName(self, "Export to bioimage.io", str(Path.home() / f"{info.name}.zip"),
                                              "bioimage.io model (*.zip)")
        if path:
            # The dialog has asked before overwriting: the export may replace the file.
            self.export_to(info.name, path if path.lower().endswith(".zip") else path + ".zip", force=True)

    def export_to(self, name: str, path: str, force: bool = False):
        """Start the export job of the model ``name`` to ``path``; returns its handle."""
        from .. import store_actions
        from ..execution import Call
        from .runner import JobRunner

        if self._runner is None:
            self._runner = JobRunner(self)
        self._say(f"exporting {name} to {path}…")
        handle = self._runner.start(Call(store_actions.export, (name, path), {"force": force}),
                                    on_done=self._exported, on_error=lambda e: self._say(describe_error(e), error=True),
                                    on_finished=self._show, activity=f"Export {name} (bioimage.io)")
        self.export_btn.setEnabled(False)
        return handle

    def _exported(self, path: str) -> None:
        import os

        self._say(f"exported to {path} ({os.path.getsize(path) / 1e6:.1f} MB)")

    def _exporting(self) -> bool:
        return self._runner is not None and self._runner.running

    def _ask_name(self, title: str, prompt: str, start: str) -> str | None:
        """The name typed, or None when cancelled or left empty."""
        text, ok = QInputDialog.getText(self, title, prompt, text=start)
        return text.strip() if ok and text.strip() else None

    def _act(self, action, done: str, select: str | None = None) -> None:
        from .. import store_actions
        from ..store import ModelError

        try:
            action(store_actions)
        except (ModelError, OSError) as exc:  # OSError: a full disk or a locked file while copying
            self._say(describe_error(exc), error=True)
            return
        self._say(done)
        self.refresh(select=select)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))
        self.status.setStyleSheet("color: #d33;" if error else "color: gray;")
        if error:
            from .runner import notify_error

            notify_error(text, "Models")


_INFO_ROLE = Qt.ItemDataRole.UserRole  # the ModelInfo of a list row


def _exportable(backend: str) -> bool:
    from .. import backends

    spec = backends.specs().get(backend)
    return spec is not None and spec.bioimageio


def _list_text(info) -> str:
    """Two lines per model: its name, then backend · dims · first metric · date (rich text)."""
    short = backend_title(info.backend).split(" (")[0]
    parts = [short, f"{info.ndim}D", *metric_parts(info.metrics or {})[:1], when(info.created)]
    return f"<b>{html.escape(info.name)}</b><br><span style='color:gray'>{html.escape(' · '.join(parts))}</span>"
