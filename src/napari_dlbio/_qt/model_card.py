"""A saved model as a readable card: what it is, what it learnt from, how good it is, its settings.

The text comes from plain functions (:func:`facts`, :func:`settings_rows`) that read a
:class:`~napari_dlbio.store.ModelInfo` only, so the card never loads a model (no torch).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import settings_fields as sf
from ..formatting import duration, metric_parts
from .forms import field_label, is_advanced

# What one annotated item is called, by the axis the training looped over.
_ITEM_WORDS = {"T": ("frame", "frames"), "Z": ("slice", "slices")}


def backend_title(backend: str) -> str:
    from .. import backends

    try:
        return backends.spec(backend).title
    except ValueError:
        return f"{backend} (backend not installed)"


def when(created: str) -> str:
    """``2026-12-03 18:31`` in local time (the stored text as it is if it cannot be read)."""
    try:
        return f"{_dt.datetime.fromisoformat(created).astimezone():%Y-%m-%d %H:%M}"
    except (TypeError, ValueError):
        return created or "unknown"


def facts(info) -> list[tuple[str, str]]:
    """(label, rich text) rows: backend, training data, validation, date, training time."""
    rows = [("Backend", f"{html.escape(backend_title(info.backend))} · {info.ndim}D · "
                        f"{info.n_channels} channel{'s' if info.n_channels != 1 else ''}")]
    rows += _data_rows(info.provenance or {}, info.ndim)
    m = info.metrics or {}
    parts = metric_parts(m)
    validation = " · ".join(parts) if parts else "no metrics (no validation data was held out)"
    if parts and "n_val" in m:
        validation += f"<br><span style='color:gray'>(on {m['n_val']} held-out item{'s' if m['n_val'] != 1 else ''})</span>"
    rows.append(("Validation", validation))
    rows.append(("Saved", when(info.created)))
    rows += _training_rows(m.get("training") or {})
    copied = (info.extra or {}).get("duplicated_from")
    if isinstance(copied, dict):
        rows.append(("Copied from", html.escape(str(copied.get("name", "?")))))
    return rows


def _data_rows(prov: dict[str, Any], ndim: int) -> list[tuple[str, str]]:
    if not prov:
        return [("Trained on", "not recorded")]
    rows = [("Trained on", _sources(prov))]
    n, objects = prov.get("n_items"), prov.get("n_objects")
    if n is not None:
        one, many = _item_word(prov, ndim)
        text = f"{n} annotated {one if n == 1 else many}"
        if objects:
            text += f" · {objects} object{'s' if objects != 1 else ''}"
        if "n_train" in prov:
            text += f"<br><span style='color:gray'>({prov['n_train']} for training, {prov.get('n_val', 0)} for validation)</span>"
        rows.append(("Annotated", text))
    parent = prov.get("fine_tuned_from")
    if isinstance(parent, dict):
        rows.append(("Base model", html.escape(str(parent.get("name", "?")))))
    return rows


def _sources(prov: dict[str, Any], most: int = 4) -> str:
    folders = prov.get("folders")
    if isinstance(folders, dict):
        text = f"images {path_html(folders.get('images'))}"
        for key in ("labels", "targets"):  # targets: restoration pairs (CARE, Noise2Noise)
            text += f"<br>{key} {path_html(folders.get(key))}" if folders.get(key) else ""
        return text
    pairs = [f"{_short(s.get('image'))}" + (f" + {_short(s.get('labels') or s.get('target'))}"
                                            if s.get("labels") or s.get("target") else "")
             for s in prov.get("sources", [])]
    if not pairs:
        return "not recorded"
    shown = [html.escape(p) for p in pairs[:most]]
    if len(pairs) > most:
        shown.append(f"and {len(pairs) - most} more")
    return "<br>".join(shown)


def path_html(path: Any) -> str:
    """A path as rich text that may wrap after each separator (a narrow dock must not clip it)."""
    return html.escape(str(path)).replace("/", "/&#8203;").replace("\\", "\\&#8203;")


def _short(path: Any) -> str:
    """A layer name as it is; a file by its name (the folder is in the Annotations' source)."""
    text = str(path)
    return text.rsplit("/", 1)[-1] if "/" in text and len(text) > 40 else text


def _item_word(prov: dict[str, Any], ndim: int) -> tuple[str, str]:
    looped = {axis for item in prov.get("items", []) if isinstance(item, dict) for axis in item}
    if len(looped) == 1:
        return _ITEM_WORDS.get(looped.pop(), ("item", "items"))
    if not looped:
        return ("volume", "volumes") if ndim == 3 else ("image", "images")
    return ("item", "items")


def _training_rows(t: dict[str, Any]) -> list[tuple[str, str]]:
    if not t:
        return []
    text = f"{duration(float(t.get('seconds', 0)))} · {t.get('epochs', '?')} epochs"
    stopped = t.get("stopped")
    if stopped and stopped != "completed":
        text += f" ({html.escape(str(stopped))})"
    if t.get("best_epoch") not in (None, t.get("epochs")):
        text += f" · kept epoch {t['best_epoch']}"
    return [("Training", text)]


def settings_rows(info) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(basic, advanced) rows of (label, value, tooltip) for the saved settings.

    The backend's settings model says which fields are advanced (as in the Train dock's
    form); saved values it does not know (an older or missing backend) go to advanced.
    """
    from .. import backends

    flat = _flatten(info.settings or {})
    try:
        specs = sf.fields(backends.spec(info.backend).Settings)
    except ValueError:
        specs = []
    basic, advanced, seen = [], [], set(sf.SKIP)
    for f in specs:
        seen.add(f.name)
        if f.name in flat:
            row = (field_label(f.name), show_value(flat[f.name], f.name), f.help())
            (advanced if is_advanced(f) else basic).append(row)
    advanced += [(field_label(k), show_value(v, k), "") for k, v in flat.items() if k not in seen]
    return basic, advanced


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def show_value(v: Any, name: str = "") -> str:
    if v is None:
        return "no limit" if name == "minutes" else "auto"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return " × ".join(map(str, v)) if all(isinstance(x, int) for x in v) else ", ".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v) if v else "–"
    return str(v)


class SettingsTable(QTableWidget):
    """Read-only (setting, value) rows, as tall as its rows: the dock scrolls, not the table."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 2, parent)
        self.horizontalHeader().setVisible(False)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_rows(self, rows: list[tuple[str, str, str]]) -> None:
        self.setRowCount(len(rows))
        for r, (label, value, tip) in enumerate(rows):
            for c, text in enumerate((label, value)):
                item = QTableWidgetItem(text)
                item.setToolTip(tip or text)
                self.setItem(r, c, item)
        self.resizeRowsToContents()
        height = sum(self.rowHeight(r) for r in range(len(rows))) + 2 * self.frameWidth()
        self.setFixedHeight(max(height, 4))

    def rows(self) -> list[tuple[str, str]]:
        return [(self.item(r, 0).text(), self.item(r, 1).text()) for r in range(self.rowCount())]


class ModelCard(QWidget):
    """The card of one saved model (or a hint when none is selected)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        from superqt import QCollapsible

        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.title)
        self.form = QFormLayout()
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        lay.addLayout(self.form)
        self.settings_label = QLabel("<b>Settings</b>")
        lay.addWidget(self.settings_label)
        self.basic = SettingsTable()
        lay.addWidget(self.basic)
        self.advanced = QCollapsible("Advanced settings", self, expandedIcon="▼", collapsedIcon="▶")
        self.advanced.setDuration(0)
        self.advanced_table = SettingsTable()
        self.advanced.addWidget(self.advanced_table)
        lay.addWidget(self.advanced)
        self.folder = QLabel("")
        self.folder.setWordWrap(True)
        self.folder.setStyleSheet("color: gray;")
        self.folder.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.folder)
        self.show_info(None)

    def show_info(self, info, empty_text: str = "") -> None:
        self.info = info
        while self.form.rowCount():
            self.form.removeRow(0)
        shown = info is not None
        for w in (self.settings_label, self.basic, self.advanced):
            w.setVisible(shown)
        if not shown:
            self.title.setText(empty_text)
            self.folder.setText("")
            return
        self.title.setText(f"<span style='font-size:14pt'><b>{html.escape(info.name)}</b></span>")
        for label, text in facts(info):
            value = QLabel(text)
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            key = QLabel(f"<b>{label}</b>")
            key.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            self.form.addRow(key, value)
        basic, advanced = settings_rows(info)
        self.basic.set_rows(basic)
        self.advanced_table.set_rows(advanced)
        self.advanced.setText(f"Advanced settings ({len(advanced)})")
        self.advanced.setVisible(bool(advanced))
        versions = ", ".join(f"{k} {v}" for k, v in (info.versions or {}).items())
        self.folder.setText(f"{path_html(info.path)}<br>{html.escape(versions)}")

    def fact(self, label: str) -> str:
        """The text of one row (tests, and whoever wants the card's words)."""
        for r in range(self.form.rowCount()):
            key = self.form.itemAt(r, QFormLayout.ItemRole.LabelRole)
            value = self.form.itemAt(r, QFormLayout.ItemRole.FieldRole)
            if key is not None and key.widget().text() == f"<b>{label}</b>":
                return value.widget().text()
        raise KeyError(label)
