"""Open bioimage.io model zips: our own exports in full, foreign ones through a backend that can run them.

Our exports carry the saved model folder (``model.json`` and the backend's files)
as attachments (:mod:`napari_dlbio.bioimageio_export`). :func:`unpack` extracts
those once into a cache folder next to the store, keyed by the zip's content, so
a zip then behaves like a model folder everywhere (Predict, fine-tuning,
provenance) and nothing is extracted twice. This needs only ``zipfile``: napari's
process can name a zip's model without importing torch or bioimageio.

Foreign packages (CAREamics' N2V/CARE zips, StarDist's official zips) hold no
``model.json``; :func:`open_foreign` asks each backend that declares bioimage.io
support (``BackendSpec.bioimageio``) to run it (``ModelBase.from_bioimageio``).

Nothing is downloaded: a zoo id or a URL fails at once with what to do instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .model_names import ModelError, check_name, store_root

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
# Files of the package itself, not of the saved model folder.
PACKAGE_FILES = ("rdf.yaml", "bioimageio.yaml", "README.md", "cover.png", "bmz_state_dict.pt", "bmz_torchscript.pt")
DOWNLOAD_HINT = ("models are not downloaded here: download the model's zip from bioimage.io (its page's "
                 "'Download' button) and give the path of the .zip file")


def cache_root() -> Path:
    return store_root().parent / "bioimageio"


def is_package(path: str | Path) -> bool:
    """True for an existing zip file that holds a bioimage.io description."""
    p = Path(path).expanduser()
    if not (p.is_file() and zipfile.is_zipfile(p)):
        return False
    with zipfile.ZipFile(p) as z:
        return any(n.rsplit("/", 1)[-1] in RDF_NAMES for n in z.namelist())


def is_ours(path: str | Path) -> bool:
    """True for a package that carries our saved model folder (an export of napari-dlbio)."""
    with zipfile.ZipFile(Path(path).expanduser()) as z:
        return "model.json" in z.namelist()


_UNPACKED: dict[tuple, Path] = {}   # (zip path, size, mtime) -> its folder: docks ask often, hash once


def unpack(path: str | Path) -> Path:
    """The saved model folder inside our package ``path``, extracted once (atomically) into the cache."""
    p = Path(path).expanduser().absolute()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key in _UNPACKED and (_UNPACKED[key] / "model.json").is_file():
        return _UNPACKED[key]
    _UNPACKED[key] = _unpack(p)
    return _UNPACKED[key]


def _unpack(p: Path) -> Path:
    # <content digest>/<model name>: a model is known by its folder's name, and two zips never share a folder.
    dest = cache_root() / _digest(p) / _model_name(p)
    if (dest / "model.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _extract_model_folder(p, tmp)
        _note_origin(tmp / "model.json", p)
        os.replace(tmp, dest)   # another process may have won the race: its folder is the same
    except OSError:
        if not (dest / "model.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract_model_folder(zip_path: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(zip_path) as z:
            for name in z.namelist():
                base = name.rsplit("/", 1)[-1]
                if base and base not in PACKAGE_FILES and not base.startswith("test_") and "/" not in name:
                    with z.open(name) as src, open(into / base, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{zip_path} cannot be read as a zip: {exc}") from exc


def _note_origin(meta: Path, zip_path: Path) -> None:
    """Provenance: the restored model says which zip it came from."""
    data = json.loads(meta.read_text())
    data.setdefault("extra", {})["bioimageio_zip"] = str(zip_path)
    meta.write_text(json.dumps(data, indent=2))


def _model_name(p: Path) -> str:
    try:
        with zipfile.ZipFile(p) as z:
            name = str(json.loads(z.read("model.json")).get("name") or p.stem)
        return check_name(name)
    except (KeyError, ValueError, ModelError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{p}: its model.json cannot be read ({exc})") from exc


def _digest(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def open_foreign(path: str | Path, models: list):
    """A model of the first of ``models`` (backends' model classes, ``from_bioimageio``) that can run
    the foreign package ``path``; one error naming each refusal. The caller lists the backends, so
    this module (which the store imports) never imports the backend registry."""
    p = Path(path).expanduser().absolute()
    rdf = _load_description(p)
    folder = Path(tempfile.mkdtemp(prefix="napari-dlbio-bmz-"))
    reasons = []
    try:
        with zipfile.ZipFile(p) as z:
            z.extractall(folder)
        for model in models:
            try:
                return model.from_bioimageio(rdf, p, folder)
            except ModelError as exc:
                reasons.append(str(exc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    raise ModelError(f"no installed backend can run the bioimage.io model {p.name} ({getattr(rdf, 'name', '?')}): "
                     + "; ".join(reasons))


def _load_description(p: Path):
    try:
        from bioimageio.spec import load_model_description
    except ImportError as exc:
        raise ModelError("opening bioimage.io models needs bioimageio.core: pip install 'napari-dlbio[bioimageio]'") from exc
    try:
        return load_model_description(p, perform_io_checks=False)
    except Exception as exc:  # noqa: BLE001 - the spec library raises many kinds
        raise ModelError(f"{p} is not a valid bioimage.io model: {exc}") from exc


def description_config(rdf) -> dict:
    """The description's free ``config`` section as plain data (a pydantic node in spec 0.5)."""
    cfg = getattr(rdf, "config", None)
    if cfg is None:
        return {}
    return cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg)


def not_found_hint(name: str) -> str:
    """What to say when ``name`` is neither a saved model nor a file: zoo ids and URLs are not fetched."""
    if "://" in name or name.startswith(("doi:", "10.")) or name.count("-") == 1 and name.replace("-", "").isalpha():
        return f"; if {name!r} is a bioimage.io model: {DOWNLOAD_HINT}"
    return ""
