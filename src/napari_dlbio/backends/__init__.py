"""Registry of backends, imported only when chosen.

Listing what is installed uses ``importlib.util.find_spec`` so that napari's
start-up (and ``napari-dlbio models``) never imports torch or a backend.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendEntry:
    name: str
    title: str
    module: str
    requires: tuple[str, ...]
    extra: str
    output: str


BACKENDS: dict[str, BackendEntry] = {
    e.name: e
    for e in (
        BackendEntry("unet", "U-Net (napari-dlbio)", "napari_dlbio.backends.unet", ("torch",), "", "labels"),
        BackendEntry("cellpose", "Cellpose", "napari_dlbio.backends.cellpose", ("torch", "cellpose"), "cellpose", "labels"),
        BackendEntry("stardist", "StarDist (PyTorch)", "napari_dlbio.backends.stardist", ("torch", "stardist"), "stardist", "labels"),
        BackendEntry("n2v", "Noise2Void (CAREamics)", "napari_dlbio.backends.n2v", ("torch", "careamics"), "n2v", "image"),
    )
}


def is_available(name: str) -> bool:
    entry = _entry(name)
    return all(importlib.util.find_spec(r) is not None for r in entry.requires)


def available() -> list[str]:
    return [n for n in BACKENDS if is_available(n)]


def _entry(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None


def get(name: str):
    """The backend object of ``name``; a clear install hint if its package is missing."""
    entry = _entry(name)
    missing = [r for r in entry.requires if importlib.util.find_spec(r) is None]
    if missing:
        hint = f"pip install 'napari-dlbio[{entry.extra}]'" if entry.extra else "pip install napari-dlbio"
        raise ImportError(f"the {entry.title} backend needs {', '.join(missing)}: {hint}")
    return importlib.import_module(entry.module).BACKEND
