"""The model store: one folder per model with its weights and ``model.json``.

``model.json`` records everything needed to reuse and to trust a model: the
backend, its validated settings, axes and normalisation, where the training data
came from, validation metrics, package versions and the date.

Saving survives ``kill -9`` at any moment (see :func:`save` and :func:`clean_partial`):
a folder visible under a model's name is always a complete version, and an
interrupted overwrite leaves the previous version findable under its name.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import _durable
from .model_names import NAME_RE as _NAME_RE
from .model_names import ModelError, check_name, store_root  # the store's API as before

FORMAT = "napari-dlbio-model"
FORMAT_VERSION = 1
META_FILE = _durable.META_FILE


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
    if not folder.exists() and folder.name:
        clean_partial(folder.parent, folder.name)  # a save killed mid-swap hid it as .NAME.old
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
            # The folder is the model's name (what ``resolve`` finds it by); a rename
            # (store_actions) or a copy made in a file manager changes only that.
            name=folder.name,
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
    """A model folder from a store name or a path (after recovering an interrupted save of it)."""
    p = Path(name_or_path).expanduser()
    if not p.exists() and p.name and _looks_like_path(str(name_or_path)):
        clean_partial(p.parent, p.name)
    if p.is_file() and p.suffix.lower() == ".zip":
        return _zip_folder(p)
    if p.exists():
        return p
    candidate = store_root() / str(name_or_path)
    if _NAME_RE.match(str(name_or_path)):
        clean_partial(store_root(), str(name_or_path))
        if candidate.exists():
            return candidate
    from .bioimageio_import import not_found_hint

    known = ", ".join(i.name for i in list_models()) or "none yet"
    raise ModelError(f"no model named or at {name_or_path!r} (models in {store_root()}: {known})"
                     f"{not_found_hint(str(name_or_path))}")


def _zip_folder(p: Path) -> Path:
    """Our bioimage.io export's model folder (extracted once); a clear error for other zips."""
    from . import bioimageio_import as bmz

    if not bmz.is_package(p):
        raise ModelError(f"{p} is not a bioimage.io model zip (it has no rdf.yaml)")
    if not bmz.is_ours(p):
        raise ModelError(f"{p} is a bioimage.io model made elsewhere: open it with the backend that runs it "
                         "(Predict dock: Pretrained; command line: --backend n2v or --backend stardist)")
    return bmz.unpack(p)


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
    clean_partial(root)
    infos = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            try:
                infos.append(read_info(d))
            except ModelError:
                continue
    return sorted(infos, key=lambda i: i.created, reverse=True)


def destination(name_or_path: str | Path) -> Path:
    """Where ``save`` will write: a bare name goes into the store, a path is used as is."""
    s = str(name_or_path)
    if _looks_like_path(s):
        return Path(s).expanduser()
    return store_root() / check_name(s)


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.startswith(("~", "."))


def save(
    info: ModelInfo,
    write_weights: Callable[[Path], None],
    dest: str | Path,
    overwrite: bool = True,
) -> Path:
    """Write weights and ``model.json`` into ``dest`` and return it; a kill at any moment
    leaves either the previous version or the new one under the name, never a mix.

    The scheme: everything is written into a temp folder (model.json last, all fsync'd),
    then ``dest -> .NAME.old``, ``temp -> dest``, ``.NAME.old`` removed. A kill between
    the two renames leaves only ``.NAME.old``; :func:`clean_partial`, run by every save
    and lookup, renames it back. A temp is never promoted: an unfinished save is lost.
    """
    dest = destination(dest)
    clean_partial(dest.parent, dest.name)  # put back a version an earlier killed save hid
    if dest.exists() and not overwrite:
        raise ModelError(f"{dest} exists; choose another name")
    if dest.exists() and not (dest / META_FILE).is_file() and any(dest.iterdir()):
        raise ModelError(f"{dest} exists and is not a napari-dlbio model; refusing to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{dest.name}.tmp-{_durable.HOST}-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
    try:
        write_weights(tmp)
        info.name = dest.name
        info.path = dest
        info.created = info.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        info.versions = {**package_versions(), **info.versions}
        _durable.write_last(tmp, json.dumps(info.to_json(), indent=2, default=_json_default))
        _durable.swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        clean_partial(dest.parent, dest.name)  # a failed swap puts the previous version back
        raise
    return dest


def clean_partial(root: Path | None = None, name: str | None = None, dead_pid: int | None = None) -> list[Path]:
    """Finish what interrupted saves left in ``root`` (the store by default), for every
    model or only ``name``; return the hidden folders removed or renamed back.

    Removes temp folders whose owner is gone (same host and PID not alive; an owner it
    cannot ask is presumed gone after 6 hours, or a minute once the temp holds model.json)
    and, once no save of that name is running, resolves ``.NAME.old``:
    without ``NAME`` and complete (readable model.json) it is renamed back to ``NAME``
    (the swap was cut short); otherwise the swap completed and it is removed.
    ``dead_pid``: a process of this host the caller knows is dead (e.g. a killed job, even
    one not yet reaped); its temps go whatever its PID looks like now. Saves and lookups call
    this, so users never need to.
    """
    root = Path(root) if root is not None else store_root()
    try:
        entries = os.listdir(root)
    except OSError:
        return []
    legacy = root == store_root()
    temps: dict[str, list[tuple[Path, str | None, int | None]]] = {}
    olds = set()
    for entry in entries:
        m = _durable.TMP_RE.match(entry) or (legacy and _durable.LEGACY_TMP_RE.match(entry))
        if m and (root / entry).is_dir():
            owner = (m["host"], int(m["pid"])) if m.re is _durable.TMP_RE else (None, None)
            temps.setdefault(m["name"], []).append((root / entry, *owner))
        elif entry.startswith(".") and entry.endswith(".old") and len(entry) > 5:
            olds.add(entry[1:-4])
    names = (olds | temps.keys()) if name is None else {name} & (olds | temps.keys())
    done: list[Path] = []
    for n in sorted(names):
        done += _recover(root, n, temps.get(n, []), dead_pid)
    return done


def _recover(root: Path, name: str, temps: list, dead_pid: int | None) -> list[Path]:
    """Each step is a rename or a removal that a later run repeats, so a kill during
    recovery itself is harmless."""
    done, running = [], False
    for tmp, host, pid in temps:
        if _durable.stale(tmp, host, pid, dead_pid):
            shutil.rmtree(tmp, ignore_errors=True)
            done.append(tmp)
        else:
            running = True
    dest = root / name
    old = _durable.old_of(dest)
    # A running save may be between its two renames: its .old is not ours to judge.
    if running or not old.is_dir():
        return done
    if not dest.exists() and _complete(old):
        try:
            old.rename(dest)
        except OSError:
            return done  # someone else restored or wrote it meanwhile
        _durable.fsync(root)
    else:
        _durable.discard(old)
    return [*done, old]


def _complete(folder: Path) -> bool:
    try:
        read_info(folder)
    except ModelError:
        return False
    return True


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
