"""Which model a job uses (:class:`ModelSource`) and what a result says about it (:class:`ModelRef`).

Both are plain data, so napari's process names a model without loading it; the
job process loads it (:meth:`ModelSource.load`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from . import store

SourceKind = Literal["saved", "folder", "pretrained"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: the store, a model folder, or a backend's own (pretrained) model."""

    kind: SourceKind
    backend: str
    path: Path | None = None       # saved / folder
    name: str = ""                 # pretrained: the backend's name or file
    created: str = ""              # of a saved model: retraining under the same name makes a new key

    @classmethod
    def saved(cls, info: store.ModelInfo, kind: SourceKind = "saved") -> ModelSource:
        return cls(kind, info.backend, Path(info.path), info.name, info.created)

    @classmethod
    def folder(cls, path: str | Path) -> ModelSource:
        """A model folder picked on disk; a clear ModelError if it holds no model.json."""
        return cls.saved(store.read_info(path), kind="folder")

    @classmethod
    def pretrained(cls, backend: str, name: str) -> ModelSource:
        return cls("pretrained", backend, None, name)

    @classmethod
    def named(cls, name_or_path: str, backend: str | None = None) -> ModelSource:
        """What ``tasks.load_model(name_or_path, backend)`` would load, without loading it.

        Paths are made absolute: the source may be loaded by a worker whose
        working folder differs (a cluster's). A ModelError when no such model is saved.
        """
        from .tasks import _store_folder

        if backend is not None and _store_folder(name_or_path) is None:
            p = Path(name_or_path).expanduser()
            return cls.pretrained(backend, str(p.resolve()) if p.exists() else str(name_or_path))
        info = store.read_info(store.resolve(name_or_path))
        if backend is not None and info.backend != backend:
            raise store.ModelError(f"{info.name} is a {info.backend} model, not {backend}")
        return replace(cls.saved(info), path=Path(info.path).resolve())

    @property
    def key(self) -> tuple:
        """Identifies the loaded model, for a dock's cache."""
        if self.path is None:
            return ("pretrained", self.backend, self.name)
        return ("store", str(self.path), self.created)

    def load(self):
        from . import tasks

        if self.path is None:
            return tasks.load_model(self.name, self.backend)
        return tasks.load_model(self.path)


@dataclass(frozen=True)
class ModelRef:
    """What a result says about its model (provenance, layer names), without the model."""

    backend: str
    name: str                      # the display name: store name, pretrained name or backend
    path: str | None = None        # the model folder, for a saved model
    suffix: str | None = None      # outputs are named <image>_<suffix> (None: the backend's, or the name)

    @classmethod
    def of(cls, model) -> ModelRef:
        info = model.info
        return cls(model.backend, model.display_name, str(info.path) if info is not None else None,
                   model.layer_suffix)
