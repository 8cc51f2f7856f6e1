"""Official pretrained StarDist models: names, addresses, download with a fast offline failure.

The addresses and checksums are those the ``stardist`` package registers in
``stardist/models/__init__.py``; they are copied here as data because importing that
module loads TensorFlow. A name is fetched once into ``$NAPARI_DLBIO_HOME/stardist``;
a local model folder or a ``.zip`` of one works without any network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

from ...store import ModelError

_BASE = "https://github.com/stardist/stardist-models/releases/download/v0.1"
OFFICIAL: dict[str, tuple[str, str]] = {
    "2D_versatile_fluo": (f"{_BASE}/python_2D_versatile_fluo.zip",
                          "4ad678d0758eed6e55625f1b5ae30771e59adb79f1239e09b9772eac8846c3dd"),
    "2D_versatile_he": (f"{_BASE}/python_2D_versatile_he.zip",
                        "f1696ef0631bd7e1c0e5c0d3017e2b4c6a95e284c6aab9c22fc2f08317817b28"),
    "2D_paper_dsb2018": (f"{_BASE}/python_2D_paper_dsb2018.zip",
                         "4c11cf68512341d9e8ce3d1278c64ceb8ac400582739f85fcab079a2e82840d2"),
    "2D_demo": (f"{_BASE}/python_2D_demo.zip",
                "a1efaebd7103db6236655bf158b6e21cf5b38d58ec77a509802244a89a260fa4"),
    "3D_demo": (f"{_BASE}/python_3D_demo.zip",
                "ea05831eb5acc8a2fd31eaa23f4460a196a9af53b14f40affb9d80885f699f90"),
}
ALIASES = {"Versatile (fluorescent nuclei)": "2D_versatile_fluo", "Versatile (H&E nuclei)": "2D_versatile_he",
           "DSB 2018 (from StarDist 2D paper)": "2D_paper_dsb2018"}
TIMEOUT_S = 5.0


def cache_root() -> Path:
    home = os.environ.get("NAPARI_DLBIO_HOME")
    return (Path(home) if home else Path.home() / ".napari-dlbio") / "stardist"


def find_model_folder(root: Path) -> Path:
    """``root`` itself or the one folder below it holding ``config.json`` (zips nest one level)."""
    if (root / "config.json").is_file():
        return root
    hits = sorted(p.parent for p in root.rglob("config.json"))
    if len(hits) != 1:
        raise ModelError(
            f"{root} holds {'no' if not hits else len(hits)} StarDist model folder(s) "
            "(config.json + weights .h5); "
            "give exactly one"
        )
    return hits[0]


def unzip(path: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                # Refuse archive members that would land outside dest.
                target = (dest / member).resolve()
                if not str(target).startswith(str(dest.resolve())):
                    raise ModelError(f"{path} contains an unsafe path {member!r}")
            z.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path} is not a valid zip file: {exc}") from exc
    return find_model_folder(dest)


def local_folder(name_or_path: str) -> Path | None:
    """The model folder for a local folder or zip path; None if it is not a path."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return find_model_folder(p)
    if p.is_file():
        if p.suffix.lower() != ".zip":
            raise ModelError(f"{p} is neither a StarDist model folder nor a .zip of one")
        dest = cache_root() / "unzipped" / f"{p.stem}-{_sha256(p)[:12]}"
        if dest.is_dir():
            return find_model_folder(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unzip-", dir=dest.parent))
        try:
            unzip(p, tmp)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return find_model_folder(dest)
    return None


def resolve(name_or_path: str, timeout: float | None = None) -> tuple[Path, str]:
    """``(model folder, display name)`` for an official name, a folder or a zip."""
    folder = local_folder(name_or_path)
    if folder is not None:
        return folder, folder.name
    name = ALIASES.get(name_or_path, name_or_path)
    if name not in OFFICIAL:
        raise ModelError(
            f"{name_or_path!r} is neither an official StarDist model ({', '.join(OFFICIAL)}) "
            "nor an existing model folder or .zip"
        )
    dest = cache_root() / name
    if dest.is_dir():
        try:
            return find_model_folder(dest), name
        except ModelError:
            shutil.rmtree(dest, ignore_errors=True)
    url, sha = OFFICIAL[name]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    try:
        archive = tmp / f"{name}.zip"
        _download(url, archive, TIMEOUT_S if timeout is None else timeout, name)
        if _sha256(archive) != sha:
            raise ModelError(f"the download of {url} is corrupt (checksum mismatch); try again")
        unzip(archive, tmp / "x")
        archive.unlink()
        (tmp / "x").rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return find_model_folder(dest), name


def _download(url: str, dest: Path, timeout: float, name: str) -> None:
    """Fetch ``url``; offline (or DNS hanging) fails within about ``timeout`` seconds."""
    import urllib.request

    box: dict[str, BaseException | None] = {"error": None}

    def work() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    # Name resolution ignores socket timeouts, so the fetch runs in a thread we stop waiting for.
    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive() and dest.exists() and dest.stat().st_size > 0:
        t.join()  # connected and receiving: let the download finish
    if t.is_alive() or box["error"] is not None:
        why = "timed out" if t.is_alive() else str(box["error"])
        raise ModelError(
            f"cannot download the StarDist model {name!r} from {url} ({why}). Without internet, "
            f"download that zip elsewhere and give its path (or the unzipped folder with config.json "
            f"and weights_best.h5) instead of the name"
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
