"""The model store: one folder per model with its weights and ``model.json``.

``model.json`` records everything needed to reuse and to trust a model: the
backend, its validated settings, axes and normalisation, where the training data
came from, validation metrics, package versions and the date. Folders are written
under a temporary name and renamed at the end, so a cancelled or failed save never
leaves a half-written model behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = "napari-dlbio-model"
FORMAT_VERSION = 1
META_FILE = "model.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ModelError(Exception):
    """A model that cannot be found, read or used; the message says why."""


def store_root() -> Path:
    """Where named models live: ``$NAPARI_DLBIO_HOME/models`` or ``~/.napari-dlbio/models``."""
    home = os.environ.get("NAPARI_DLBIO_HOME")
    base = Path(home) if home else Path.home() / ".napari-dlbio"
    return base / "models"


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("napari-dlbio", "torch", "numpy", *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class ModelInfo:
    """The parsed ``model.json`` of one model folder."""

    path: Path
    name: str
    backend: str
    settings: dict[str, Any]
    created: str = ""
    axes: str | None = None
    ndim: int = 2
    n_channels: int = 1
    normalization: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "backend": self.backend,
            "created": self.created,
            "axes": self.axes,
            "ndim": self.ndim,
            "n_channels": self.n_channels,
            "settings": self.settings,
            "normalization": self.normalization,
            "provenance": self.provenance,
            "metrics": self.metrics,
            "history": self.history,
            "versions": self.versions,
            "extra": self.extra,
        }


def read_info(folder: str | Path) -> ModelInfo:
    """Read and check ``model.json``; a missing, corrupt or foreign folder is a clear error."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ModelError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise ModelError(f"{folder} is a file, not a model folder (expected a folder with {META_FILE})")
    meta = folder / META_FILE
    if not meta.is_file():
        raise ModelError(
            f"{folder} is not a napari-dlbio model: it has no {META_FILE} "
            "(models of other tools must be opened through their backend, e.g. --backend cellpose)"
        )
    try:
        data = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta} is corrupt and cannot be read: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{meta} was not written by napari-dlbio (format {data.get('format')!r})"
                         if isinstance(data, dict) else f"{meta} is not a model description")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{folder.name} was saved by a newer napari-dlbio (format {data['format_version']}); "
            "update the plugin to open it"
        )
    try:
        return ModelInfo(
            path=folder,
            name=data["name"],
            backend=data["backend"],
            settings=data.get("settings", {}),
            created=data.get("created", ""),
            axes=data.get("axes"),
            ndim=int(data.get("ndim", 2)),
            n_channels=int(data.get("n_channels", 1)),
            normalization=data.get("normalization", {}),
            provenance=data.get("provenance", {}),
            metrics=data.get("metrics", {}),
            history=data.get("history", []),
            versions=data.get("versions", {}),
            extra=data.get("extra", {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{meta} is incomplete: {exc}") from exc


def resolve(name_or_path: str | Path) -> Path:
    """A model folder from a store name or a path."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    candidate = store_root() / str(name_or_path)
    if _NAME_RE.match(str(name_or_path)) and candidate.exists():
        return candidate
    known = ", ".join(i.name for i in list_models()) or "none yet"
    raise ModelError(f"no model named or at {name_or_path!r} (models in {store_root()}: {known})")


def stamp(root: Path | None = None) -> int | None:
    """A cheap sign of change: the store folder's modification time (None while it does not exist).

    Saving, overwriting and deleting a model add, rename or remove an entry of the
    folder, which changes its time; pickers compare stamps instead of re-reading every model.json.
    """
    try:
        return (root or store_root()).stat().st_mtime_ns
    except OSError:
        return None


def list_models(root: Path | None = None) -> list[ModelInfo]:
    """All readable models of the store, newest first; unreadable folders are skipped."""
    root = root or store_root()
    if not root.is_dir():
        return []
    infos = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            try:
                infos.append(read_info(d))
            except ModelError:
                continue
    return sorted(infos, key=lambda i: i.created, reverse=True)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ModelError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)"
        )
    return name


def destination(name_or_path: str | Path) -> Path:
    """Where ``save`` will write: a bare name goes into the store, a path is used as is."""
    s = str(name_or_path)
    if os.sep in s or "/" in s or s.startswith("~") or s.startswith("."):
        return Path(s).expanduser()
    return store_root() / check_name(s)


def save(
    info: ModelInfo,
    write_weights: Callable[[Path], None],
    dest: str | Path,
    overwrite: bool = True,
) -> Path:
    """Write weights and ``model.json`` atomically into ``dest`` and return it."""
    dest = destination(dest)
    if dest.exists() and not overwrite:
        raise ModelError(f"{dest} exists; choose another name")
    if dest.exists() and not (dest / META_FILE).is_file() and any(dest.iterdir()):
        raise ModelError(f"{dest} exists and is not a napari-dlbio model; refusing to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        write_weights(tmp)
        info.name = dest.name
        info.path = dest
        info.created = info.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        info.versions = {**package_versions(), **info.versions}
        (tmp / META_FILE).write_text(json.dumps(info.to_json(), indent=2, default=_json_default))
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
