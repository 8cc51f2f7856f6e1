"""Settings models as flat lists of field specs, for the CLI and the GUI forms.

A backend's pydantic ``Settings``/``Predict`` model is the single source of its
options: :func:`fields` turns it into :class:`FieldSpec` objects (type, default,
choices from ``Literal``, bounds from ``ge/le/gt/lt``, description, the
``json_schema_extra={"advanced": True}`` flag, whether ``None`` is allowed).
Nested settings models (e.g. ``normalization: Normalization``) are flattened
to dotted names (``"normalization.low"``) and :func:`build` nests them again.
No Qt import here: ``napari_dlbio._qt.forms`` builds the widgets from these specs.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ValidationError

from .formatting import validation_error

__all__ = ["FieldSpec", "fields", "build", "flat_values", "SKIP"]

# Fields that are bookkeeping, not user options.
SKIP = frozenset({"version"})


@dataclass(frozen=True)
class FieldSpec:
    name: str  # dotted path: "patch_size", "normalization.low"
    type: type  # scalar type: int, float, bool, str or Path
    default: Any  # default value (None allowed when optional)
    description: str = ""
    choices: tuple[Any, ...] | None = None  # from Literal[...]
    ge: float | None = None  # inclusive lower bound (ge)
    le: float | None = None  # inclusive upper bound (le)
    gt: float | None = None  # exclusive lower bound (gt)
    lt: float | None = None  # exclusive upper bound (lt)
    optional: bool = False  # None is a valid value ("automatic" / "off")
    advanced: bool = False  # json_schema_extra={"advanced": True}, here or on the parent model field
    sequence: int | None = None  # list/tuple of ``type``: its fixed length, or -1 for any length
    group: str = ""  # parent field of a nested model ("normalization"), "" at top level

    # -- names -----------------------------------------------------------
    @property
    def option(self) -> str:
        """The CLI option: ``"--patch-size"``, ``"--normalization-low"``."""
        return "--" + self.name.replace(".", "-").replace("_", "-")

    @property
    def dest(self) -> str:
        """An identifier (argparse ``dest``)."""
        return self.name.replace(".", "__")

    # -- bounds ----------------------------------------------------------
    @property
    def minimum(self) -> float | None:
        """Smallest accepted value (an exclusive bound is nudged inwards for ints)."""
        if self.ge is not None:
            return self.ge
        if self.gt is not None:
            return self.gt + 1 if self.type is int else self.gt
        return None

    @property
    def maximum(self) -> float | None:
        if self.le is not None:
            return self.le
        if self.lt is not None:
            return self.lt - 1 if self.type is int else self.lt
        return None

    def bounds_text(self) -> str:
        lo = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        hi = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        return ", ".join(t for t in (lo, hi) if t)

    # -- text conversion (CLI) ------------------------------------------
    def parse(self, text: str) -> Any:
        """A command-line string -> value; ``none`` gives None for optional fields.

        Range and choice checks are left to pydantic in :func:`build`, so the
        message is the same in the CLI and the GUI.
        """
        if self.optional and text.strip().lower() in ("none", "auto", ""):
            return None
        if self.sequence is not None:
            sep = text.replace(" ", ",")
            if self.type in (int, float):
                sep = sep.replace("x", ",")  # "128x128" as well as "128,128"
            parts = [p for p in sep.split(",") if p]
            return [self._scalar(p) for p in parts]
        return self._scalar(text)

    def _scalar(self, text: str) -> Any:
        if self.choices is not None:
            for c in self.choices:
                if str(c) == text:
                    return c
            raise ValueError(f"{self.option}: {text!r} is not one of {', '.join(map(str, self.choices))}")
        if self.type is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{self.option}: expected true/false, got {text!r}")
        try:
            return self.type(text)
        except (TypeError, ValueError):
            raise ValueError(f"{self.option}: expected {self.type.__name__}, got {text!r}") from None

    def help(self) -> str:
        """One line for ``--help``: description, choices, bounds, default."""
        parts = [self.description.rstrip(".")] if self.description else []
        if self.choices:
            parts.append("one of " + "|".join(map(str, self.choices)))
        b = self.bounds_text()
        if b:
            parts.append(b)
        if self.sequence is not None:
            parts.append(
                "comma-separated" if self.sequence < 0 else f"{self.sequence} comma-separated values"
            )
        d = self.default
        if self.optional and d is None:
            parts.append("default: none")
        else:
            parts.append(f"default: {_show(d)}")
        return "; ".join(parts)


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


# --- model introspection ------------------------------------------------------------
def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(annotation without None, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        # A union of several types: offer the first arm the CLI/GUI can edit.
        for a in args:
            if _scalar_type(a) is not None or _sequence(a) is not None:
                return a, optional
        return args[0], optional
    return annotation, False


def _scalar_type(a: Any) -> type | None:
    if a in (bool, int, float, str):
        return a
    if isinstance(a, type) and issubclass(a, Path):
        return Path
    return None


def _sequence(a: Any) -> tuple[type, int] | None:
    origin = typing.get_origin(a)
    args = typing.get_args(a)
    if origin in (list, set, frozenset) and args:
        t = _scalar_type(args[0])
        return (t, -1) if t else None
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            t = _scalar_type(args[0])
            return (t, -1) if t else None
        ts = {_scalar_type(x) for x in args}
        if len(ts) == 1 and None not in ts:
            return ts.pop(), len(args)
    return None


def _bounds(metadata: Iterable[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in metadata:
        for key in ("ge", "le", "gt", "lt"):
            v = getattr(m, key, None)
            if v is not None:
                out[key] = v
    return out


def _is_advanced(info) -> bool:
    extra = info.json_schema_extra
    return bool(isinstance(extra, dict) and extra.get("advanced"))


def _default(info) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return info.get_default()


def fields(
    model: type[BaseModel] | BaseModel,
    advanced: bool = True,
    skip: Iterable[str] = SKIP,
) -> list[FieldSpec]:
    """The user-editable fields of a settings model, in declaration order.

    Pass an instance to use its current values as defaults (e.g. a loaded model's
    settings). ``advanced=False`` leaves out fields marked advanced. Fields of
    types no form can edit (dicts, arbitrary objects) are left out.
    """
    cls = model if isinstance(model, type) else type(model)
    values = model if isinstance(model, BaseModel) else None
    out: list[FieldSpec] = []
    skip = frozenset(skip)
    for name, info in cls.model_fields.items():
        if name in skip:
            continue
        annotation, optional = _unwrap(info.annotation)
        default = getattr(values, name) if values is not None else _default(info)
        adv = _is_advanced(info)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub = default if isinstance(default, BaseModel) else annotation
            for f in fields(sub, True, skip):
                f = _replace(f, name=f"{name}.{f.name}", group=name, advanced=f.advanced or adv)
                if advanced or not f.advanced:
                    out.append(f)
            continue
        if adv and not advanced:
            continue
        common = dict(
            name=name,
            default=default,
            description=info.description or "",
            optional=optional,
            advanced=adv,
            **_bounds(info.metadata),
        )
        if typing.get_origin(annotation) is Literal:
            choices = typing.get_args(annotation)
            out.append(FieldSpec(type=type(choices[0]), choices=tuple(choices), **common))
            continue
        scalar = _scalar_type(annotation)
        if scalar is not None:
            out.append(FieldSpec(type=scalar, **common))
            continue
        seq = _sequence(annotation)
        if seq is not None:
            if isinstance(default, tuple):
                common["default"] = list(default)
            out.append(FieldSpec(type=seq[0], sequence=seq[1], **common))
    return out


def _replace(spec: FieldSpec, **changes: Any) -> FieldSpec:
    from dataclasses import replace

    return replace(spec, **changes)


# --- values <-> models ---------------------------------------------------------------
def flat_values(settings: BaseModel, skip: Iterable[str] = SKIP) -> dict[str, Any]:
    """A settings instance as ``{dotted name: value}`` (the inverse of :func:`build`)."""
    return {f.name: f.default for f in fields(settings, True, skip)}


def build(
    model: type[BaseModel],
    values: Mapping[str, Any],
    base: BaseModel | Mapping[str, Any] | None = None,
) -> BaseModel:
    """Validate flat ``{dotted name or dest: value}`` into ``model``.

    ``base`` (an instance or dict) supplies the values not given. An invalid
    value raises ``ValueError`` with a one-line message naming the field.
    """
    if isinstance(base, BaseModel):
        data = base.model_dump()
    else:
        data = dict(base or {})
    for key, value in values.items():
        path = key.replace("__", ".").split(".")
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if isinstance(child, BaseModel):
                child = child.model_dump()
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[path[-1]] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(validation_error(exc)) from None

