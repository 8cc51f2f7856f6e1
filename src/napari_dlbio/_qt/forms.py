"""A settings form generated from a backend's pydantic model.

Every backend's ``Settings`` / ``Predict`` model becomes a form: basic fields
visible, fields marked ``{"advanced": True}`` (and nested models such as the
normalisation) in a collapsible "Advanced" section. Descriptions become tooltips.
The form never validates by itself: :meth:`SettingsForm.build` hands the values to
the model, so the rules live in one place and a mistake comes back as pydantic's
``ValidationError`` for the dock to show as a notification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

_SKIP = {"version"}
# Shared base fields (config.py) that a biologist rarely needs to see first.
_ALSO_ADVANCED = {"device", "seed", "val_fraction", "steps_per_epoch", "tile_size", "tile_overlap"}


def _label(name: str) -> str:
    special = {"minutes": "time budget (min)", "learning_rate": "learning rate", "labels_zero": "label 0 means"}
    return special.get(name, name.replace("_", " "))


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
        self.hide = set(hide) | _SKIP
        self._entries: dict[str, _Entry] = {}
        self._nested: dict[str, SettingsForm] = {}
        specs = [s for s in field_specs(model_cls) if s.name not in self.hide]

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        basic = QFormLayout()
        _tidy(basic)
        lay.addLayout(basic)
        adv_specs = [s for s in specs if s.advanced or s.model is not None]
        self.advanced = None
        adv_layout = None
        if adv_specs:
            from superqt import QCollapsible

            self.advanced = QCollapsible("Advanced settings", self, expandedIcon="▼", collapsedIcon="▶")
            self.advanced.setDuration(0)
            box = QWidget()
            adv_layout = QFormLayout(box)
            _tidy(adv_layout)
            self.advanced.addWidget(box)
            lay.addWidget(self.advanced)
        for spec in specs:
            target = adv_layout if (spec.advanced or spec.model is not None) else basic
            if spec.model is not None:
                sub = SettingsForm(spec.model, parent=self)
                sub.changed.connect(self.changed)
                sub.setToolTip(spec.description or "")
                self._nested[spec.name] = sub
                target.addRow(_label(spec.name) + ":", sub)
                continue
            w = self._make_widget(spec)
            w.setToolTip(spec.description or "")
            self._entries[spec.name] = _Entry(spec, w)
            target.addRow(_label(spec.name), w)
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
        if spec.sequence:
            # "64, 64" -> [64, 64]; pydantic coerces the items.
            return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]
        if spec.type in (dict, list):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text
        return text  # pydantic parses numbers from text and names the field if it cannot

    # -- values ---------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        out = {name: self._get(e.widget, e.spec) for name, e in self._entries.items()}
        for name, sub in self._nested.items():
            out[name] = sub.values()
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        for name, v in values.items():
            if name in self._entries:
                e = self._entries[name]
                self._set(e.widget, e.spec, v)
            elif name in self._nested and isinstance(v, dict):
                self._nested[name].set_values(v)

    def build(self, **overrides):
        """The validated settings model (raises pydantic ``ValidationError``)."""
        return self.model_cls(**{**self.values(), **overrides})

    def widget(self, name: str) -> QWidget:
        return self._entries[name].widget

    def field_names(self) -> list[str]:
        return list(self._entries) + list(self._nested)


@dataclass
class Spec:
    name: str
    type: type | None
    default: Any = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    advanced: bool = False
    optional: bool = False
    sequence: bool = False
    model: type | None = None      # a nested settings model


def field_specs(model_cls) -> list[Spec]:
    """Field specs of a pydantic settings model, in declaration order."""
    import typing

    from annotated_types import Ge, Gt, Le, Lt
    from pydantic import BaseModel

    specs = []
    for name, f in model_cls.model_fields.items():
        ann = f.annotation
        args = typing.get_args(ann)
        optional = type(None) in args
        if optional:
            rest = [a for a in args if a is not type(None)]
            ann = rest[0] if len(rest) == 1 else ann
        origin = typing.get_origin(ann)
        choices = tuple(typing.get_args(ann)) if origin is typing.Literal else None
        sequence = origin in (list, tuple)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        lo = hi = None
        for m in f.metadata:
            if isinstance(m, Ge):
                lo = m.ge
            elif isinstance(m, Gt):
                lo = m.gt + (1 if ann is int else 0)
            elif isinstance(m, Le):
                hi = m.le
            elif isinstance(m, Lt):
                hi = m.lt - (1 if ann is int else 0)
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        default = f.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump()
        specs.append(Spec(
            name, ann if isinstance(ann, type) else None, default, choices, lo, hi,
            f.description or "", bool(extra.get("advanced", name in _ALSO_ADVANCED)), optional, sequence, model,
        ))
    return specs


def _none_text(name: str) -> str:
    return {"minutes": "no limit"}.get(name, "auto")


def _tidy(form: QFormLayout) -> None:
    form.setContentsMargins(0, 0, 0, 0)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
