"""Rename, duplicate and delete models of the store, with the store's kill-safety.

A model is known by its folder's name (``store.read_info`` reports that name), so:

- :func:`rename` is one ``os.rename`` of the folder, atomic on every file system we
  support; ``model.json``'s ``name`` is then rewritten (atomically) to agree.
- :func:`duplicate` goes through :func:`store.save`: the copy is written into a temp
  folder, ``model.json`` last, and renamed in; a kill leaves no half-copied model.
- :func:`delete` first renames the folder to a save's temp name (it leaves the store
  at once), then removes it; a removal cut short is finished by ``store.clean_partial``
  like any abandoned save.

All three refuse a name that is taken, invalid, or that a running save is writing.
:func:`export` writes a model as a bioimage.io zip (a job: it needs torch, so the
Models dock runs it in the job process).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
from pathlib import Path

from . import _durable, store
from .store import ModelError


def rename(name: str, new_name: str) -> Path:
    """Give the store's model ``name`` the name ``new_name``; returns its new folder."""
    src = _existing(name)
    dest = _free(new_name, same_as=name)
    try:
        os.rename(src, dest)
    except OSError as exc:
        raise ModelError(f"could not rename {name!r} to {new_name!r}: {exc.strerror or exc}") from exc
    _durable.fsync(dest.parent)
    _rewrite_name(dest)
    return dest


def duplicate(name: str, new_name: str) -> Path:
    """Copy the store's model ``name`` to ``new_name`` (weights, settings, provenance, metrics)."""
    src = _existing(name)
    dest = _free(new_name, same_as=name)
    info = store.read_info(src)
    info.extra = {**info.extra, "duplicated_from": {
        "name": name, "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}

    def copy_files(tmp: Path) -> None:
        # The model's own files only: model.json is written by save(), last.
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=lambda d, names: (
            [store.META_FILE] if Path(d) == src else []))

    return store.save(info, copy_files, dest, overwrite=False)


def delete(name: str) -> Path:
    """Remove the store's model ``name`` (its folder and nothing else); returns the folder removed."""
    src = _existing(name)
    trash = src.with_name(f".{src.name}.tmp-{_durable.HOST}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(src, trash)  # gone from the store in one step; the rest is clean-up
    except OSError as exc:
        raise ModelError(f"could not delete {name!r}: {exc.strerror or exc}") from exc
    _durable.fsync(src.parent)
    _durable.discard(trash)  # model.json first: a removal cut short never looks like a model
    return src


def export(name: str, out_zip: str, force: bool = False, ctx=None) -> str:
    """Write the store's model ``name`` as a bioimage.io zip at ``out_zip``; returns its path."""
    from . import tasks
    from .bioimageio_export import export_model

    return str(export_model(tasks.load_model(_existing(name)), out_zip, force=force, ctx=ctx))


def copy_name(name: str) -> str:
    """A free name for a copy of ``name``: ``NAME-copy``, ``NAME-copy2``, ..."""
    root = store.store_root()
    base = f"{name[:95]}-copy"
    n = 1
    while (root / (base if n == 1 else f"{base}{n}")).exists():
        n += 1
    return base if n == 1 else f"{base}{n}"


def _existing(name: str) -> Path:
    store.check_name(name)
    root = store.store_root()
    store.clean_partial(root, name)  # a save killed mid-swap may have hidden it
    folder = root / name
    if not (folder / store.META_FILE).is_file():
        known = ", ".join(i.name for i in store.list_models(root)) or "none yet"
        raise ModelError(f"no model named {name!r} in {root} (models: {known})")
    _refuse_if_saving(root, name)
    return folder


def _free(new_name: str, same_as: str) -> Path:
    store.check_name(new_name)
    if new_name == same_as:
        raise ModelError(f"the model is already named {new_name!r}; choose another name")
    root = store.store_root()
    store.clean_partial(root, new_name)
    dest = root / new_name
    if dest.exists():
        what = "a model" if (dest / store.META_FILE).is_file() else "a folder"
        raise ModelError(f"{what} named {new_name!r} already exists in {root}; choose another name")
    _refuse_if_saving(root, new_name)
    return dest


def _refuse_if_saving(root: Path, name: str) -> None:
    """A running save of ``name`` would put a model back under it: wait for it instead."""
    for entry in os.listdir(root):
        m = _durable.TMP_RE.match(entry)
        if m and m["name"] == name:  # clean_partial has removed the stale ones
            raise ModelError(f"a model named {name!r} is being saved right now; try again when it is done")


def _rewrite_name(folder: Path) -> None:
    """Make model.json's ``name`` agree with the folder (replaced atomically, fsync'd)."""
    meta = folder / store.META_FILE
    tmp = meta.with_name(f".{store.META_FILE}.{secrets.token_hex(4)}")
    try:
        data = json.loads(meta.read_text())
        data["name"] = folder.name
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, meta)
        _durable.fsync(folder)
    except (OSError, ValueError):
        # Cosmetic only: read_info names a model by its folder, so the rename already holds.
        tmp.unlink(missing_ok=True)
