"""The registry of backends: the one place that says which backends exist.

Each backend declares itself once, in a :class:`~.base.BackendSpec` (for the
built-in ones, ``SPEC`` in ``napari_dlbio.backends.<name>.spec``). Specs are
cheap to read; a backend's model code, torch and its library are imported only
by :func:`get`. Listing what is installed uses ``importlib.util.find_spec`` so
that napari's start-up never imports torch or a backend.

Other packages add backends through the ``napari_dlbio.backends`` entry-point
group (an entry point names a ``BackendSpec``), or at run time with
:func:`register`.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from importlib import metadata

from .base import Backend, BackendSpec, BlockNeeds, ModelBase

__all__ = ["Backend", "BackendSpec", "BlockNeeds", "ModelBase", "available", "get", "installed_spec", "is_available", "names", "register",
           "spec", "specs", "unregister"]

BUILTIN = (
    "napari_dlbio.backends.unet.spec",
    "napari_dlbio.backends.cellpose.spec",
    "napari_dlbio.backends.stardist.spec",
    "napari_dlbio.backends.n2v.spec",
)
ENTRY_POINT_GROUP = "napari_dlbio.backends"
DEFAULT = "unet"  # what `napari-dlbio train` trains when no --backend is given
_registered: dict[str, BackendSpec] = {}


@lru_cache(maxsize=1)
def _installed() -> tuple[BackendSpec, ...]:
    found = [importlib.import_module(m).SPEC for m in BUILTIN]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append(ep.load())
        except Exception:  # noqa: BLE001 - a broken plug-in must not hide the others
            continue
    return tuple(found)


def specs() -> dict[str, BackendSpec]:
    """Every known backend by name, installed or not (built-in first)."""
    out = {s.name: s for s in _installed()}
    out.update(_registered)
    return out


def names() -> list[str]:
    return list(specs())


def register(spec: BackendSpec) -> BackendSpec:
    """Add (or replace) a backend at run time; returns ``spec``."""
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"register() takes a BackendSpec, not {type(spec).__name__}")
    _registered[spec.name] = spec
    get.cache_clear()
    return spec


def registered() -> list[BackendSpec]:
    """The backends added with :func:`register` (a job process is told about them)."""
    return list(_registered.values())


def unregister(name: str) -> None:
    _registered.pop(name, None)
    get.cache_clear()


def spec(name: str) -> BackendSpec:
    try:
        return specs()[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(specs())}") from None


def missing(name: str) -> list[str]:
    """The required packages of ``name`` that are not installed."""
    return [r for r in spec(name).requires if importlib.util.find_spec(r) is None]


def is_available(name: str) -> bool:
    return not missing(name)


def available() -> list[str]:
    return [n for n in specs() if is_available(n)]


def installed_spec(name: str) -> BackendSpec:
    """The spec of ``name``, whose packages must be installed (ImportError with the install hint)."""
    s = spec(name)
    lacking = missing(name)
    if lacking:
        raise ImportError(f"the {s.title} backend needs {', '.join(lacking)}: {s.install_hint()}")
    return s


@lru_cache(maxsize=None)
def get(name: str) -> Backend:
    """The backend ``name`` with its model class imported; a clear install hint if a package is missing."""
    return Backend(installed_spec(name))
