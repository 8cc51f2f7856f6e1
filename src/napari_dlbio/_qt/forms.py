"""A settings form generated from a backend's pydantic model.

Every backend's ``Settings`` / ``Predict`` model becomes a form through
:mod:`napari_dlbio.settings_fields` (the same field list the CLI uses): basic
fields visible, fields marked ``{"advanced": True}`` (and nested models such as
the normalisation) in a collapsible "Advanced" section; descriptions become
tooltips. The form never validates by itself: :meth:`SettingsForm.build` hands
the values to ``settings_fields.build``, so the rules live in the model and a
mistake comes back as one readable ``ValueError`` for the dock to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import settings_fields as sf

_SKIP = set(sf.SKIP)
# Shared base fields (config.py) that a biologist rarely needs to see first.
_ALSO_ADVANCED = {"device", "seed", "val_fraction", "steps_per_epoch", "tile_size", "tile_overlap"}


def field_label(name: str) -> str:
    """A field's name as a form (or the Models dock's settings table) shows it."""
    special = {"minutes": "time budget (min)", "learning_rate": "learning rate", "labels_zero": "label 0 means"}
    return special.get(name, name.replace(".", " ").replace("_", " "))


def is_advanced(spec) -> bool:
    """Whether a field goes into the folded "Advanced" part of a form or settings table."""
    return bool(spec.advanced or spec.group or spec.name in _ALSO_ADVANCED)


@dataclass
class _Entry:
    spec: Any
    widget: QWidget


class SettingsForm(QWidget):
    """Form for ``model_cls``; ``hide`` names fields the dock sets itself."""

    changed = Signal()

    def __init__(
        self,
        model_cls,
        values: dict[str, Any] | None = None,
        hide: set[str] | frozenset[str] = frozenset(),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model_cls = model_cls
        # Not ``self.hide``: that would shadow QWidget.hide().
        self.hidden_fields = set(hide) | _SKIP
        self._entries: dict[str, _Entry] = {}
        specs = [f for f in sf.fields(model_cls) if f.name not in self.hidden_fields
                 and f.group not in self.hidden_fields]

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        basic = QFormLayout()
        _tidy(basic)
        lay.addLayout(basic)
        self.advanced = None
        adv_layout = None
        if any(is_advanced(f) for f in specs):
            from superqt import QCollapsible

            self.advanced = QCollapsible("Advanced settings", self, expandedIcon="▼", collapsedIcon="▶")
            self.advanced.setDuration(0)
            box = QWidget()
            adv_layout = QFormLayout(box)
            _tidy(adv_layout)
            self.advanced.addWidget(box)
            lay.addWidget(self.advanced)
        for spec in specs:
            w = self._make_widget(spec)
            w.setToolTip(spec.help())
            self._entries[spec.name] = _Entry(spec, w)
            (adv_layout if is_advanced(spec) else basic).addRow(field_label(spec.name), w)
        if values:
            self.set_values(values)

    # -- widgets --------------------------------------------------------------------
    def _make_widget(self, spec) -> QWidget:
        if spec.choices:
            w = QComboBox()
            for c in spec.choices:
                w.addItem(str(c), c)
            w.currentIndexChanged.connect(self.changed)
        elif spec.type is bool:
            w = QCheckBox()
            w.toggled.connect(self.changed)
        elif spec.type is int and not spec.optional:
            w = QSpinBox()
            lo = spec.minimum if spec.minimum is not None else -(2**31 - 1)
            hi = spec.maximum if spec.maximum is not None else 2**31 - 1
            w.setRange(int(max(lo, -(2**31 - 1))), int(min(hi, 2**31 - 1)))
            w.valueChanged.connect(self.changed)
        else:
            # Floats (learning rates like 1e-4 need free text), optional numbers, text, lists.
            w = QLineEdit()
            if spec.optional:
                w.setPlaceholderText(_none_text(spec.name))
            w.textChanged.connect(self.changed)
        self._set(w, spec, spec.default)
        return w

    @staticmethod
    def _set(w: QWidget, spec, value) -> None:
        if isinstance(w, QComboBox):
            i = w.findData(value)
            if i < 0:
                i = w.findText(str(value))
            if i >= 0:
                w.setCurrentIndex(i)
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox):
            if value is not None:
                w.setValue(int(value))
        elif isinstance(w, QLineEdit):
            if value is None:
                w.setText("")
            elif isinstance(value, (list, tuple)):
                w.setText(", ".join(str(v) for v in value))
            else:
                w.setText(str(value))

    @staticmethod
    def _get(w: QWidget, spec) -> Any:
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox):
            return w.value()
        text = w.text().strip()
        if text == "" and (spec.optional or spec.type is not str):
            return None if spec.optional else spec.default
        try:
            return spec.parse(text)
        except ValueError:
            return text  # pydantic names the field and the problem in build()

    # -- values ---------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """Flat ``{dotted name: value}`` (``"normalization.low"`` for nested settings)."""
        return {name: self._get(e.widget, e.spec) for name, e in self._entries.items()}

    def set_values(self, values: dict[str, Any], prefix: str = "") -> None:
        """Set fields from flat (dotted) or nested dicts; unknown names are ignored."""
        for name, v in values.items():
            key = f"{prefix}{name}"
            if isinstance(v, dict) and key not in self._entries:
                self.set_values(v, prefix=f"{key}.")
            elif key in self._entries:
                e = self._entries[key]
                self._set(e.widget, e.spec, v)

    def build(self, **overrides):
        """The validated settings model; a ``ValueError`` naming the field otherwise."""
        return sf.build(self.model_cls, {**self.values(), **overrides})

    def widget(self, name: str) -> QWidget:
        return self._entries[name].widget

    def field_names(self) -> list[str]:
        return list(self._entries)


class SettingsBox(QGroupBox):
    """A dock's "Settings" group: the form of one settings model, rebuilt when the backend changes.

    Widgets added with :meth:`add_below` (a dock's own options) stay under the form.
    """

    def __init__(self, title: str = "Settings", parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.form: SettingsForm | None = None
        self._shown: tuple | None = None
        self._layout = QVBoxLayout(self)

    def show_form(self, model_cls, hide: frozenset[str] = frozenset()) -> SettingsForm | None:
        """The form for ``model_cls`` (None: no form); the current one is kept if it fits."""
        if (model_cls, hide) == self._shown:
            return self.form
        self._drop()
        self._shown = (model_cls, hide)
        if model_cls is not None:
            self.form = SettingsForm(model_cls, hide=hide)
            self._layout.insertWidget(0, self.form)
        return self.form

    def add_below(self, widget: QWidget) -> None:
        self._layout.addWidget(widget)

    def _drop(self) -> None:
        if self.form is None:
            return
        self._layout.removeWidget(self.form)
        # Hidden now: deleteLater waits for the event loop, and the old form must not
        # paint over the new one meanwhile.
        self.form.hide()
        self.form.deleteLater()
        self.form = None


def _none_text(name: str) -> str:
    return {"minutes": "no limit"}.get(name, "auto")


def _tidy(form: QFormLayout) -> None:
    form.setContentsMargins(0, 0, 0, 0)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
