"""Find a Cellpose model file; fail at once, and clearly, when it is not on this computer.

``CellposeModel("cpsam")`` downloads missing weights (1.2 GB) from Hugging Face and,
given an unknown name, silently falls back to the default model. Here a name is
looked up in Cellpose's models folder first; the downloader runs only when that
file is missing *and* a quick probe (a few seconds at most) reaches the server,
so an offline computer gets a message naming the missing file and what to do.

Importing ``cellpose.models`` takes seconds (torch and Cellpose), so it is left
to the download: the models folder, the known names and the download address are
read the way Cellpose itself sets them (see :func:`models_dir`), unless Cellpose
is imported already, whose values then win.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import socket
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...store import META_FILE, ModelError

WEIGHTS = "cellpose_model"          # the native Cellpose file inside our model folders
_HOST = "huggingface.co"
PROBE_SECONDS = 3.0
# cellpose.models._MODEL_URL of Cellpose 4, in case its source does not say (see _source_literals).
_MODEL_URL = "https://huggingface.co/mouseland/cellpose-sam/resolve/main/"


def _imported_models():
    """``cellpose.models`` when something imported it already, else None (without importing it)."""
    return sys.modules.get("cellpose.models")


def models_dir() -> Path:
    """Cellpose's models folder (``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``).

    Cellpose 4 (``cellpose/models.py``) sets ``MODEL_DIR`` at import: the environment
    variable when set and not empty, else ``~/.cellpose/models``. The same rule here
    spares importing Cellpose; once it is imported, its ``MODEL_DIR`` is what its
    downloader uses, so that one is returned.
    """
    loaded = _imported_models()
    if loaded is not None:
        return Path(loaded.MODEL_DIR)
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


@lru_cache(maxsize=1)
def _source_literals() -> dict[str, Any]:
    """The literal module-level values of ``cellpose/models.py`` (``MODEL_NAMES``, ``_MODEL_URL``).

    Read from the source without running it (that would import torch); empty when
    the file is not found or cannot be parsed.
    """
    spec = importlib.util.find_spec("cellpose")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    out: dict[str, Any] = {}
    try:
        tree = ast.parse(Path(folders[0], "models.py").read_text(encoding="utf-8"))
    except (IndexError, OSError, SyntaxError, ValueError):
        return out
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                continue  # not a literal (e.g. MODEL_DIR)
    return out


def _known_names() -> list[str]:
    """The names Cellpose accepts: its own (``MODEL_NAMES``) and the user's (``gui_models.txt``)."""
    loaded = _imported_models()
    official = _source_literals().get("MODEL_NAMES") if loaded is None else loaded.MODEL_NAMES
    if not isinstance(official, (list, tuple)):
        # Not a literal in this Cellpose version: ask Cellpose itself (slow, but right).
        from cellpose import models

        return list(dict.fromkeys([*models.MODEL_NAMES, *models.get_user_models()]))
    user = loaded.get_user_models() if loaded is not None else _user_models()
    return list(dict.fromkeys([*map(str, official), *user]))


def _user_models() -> list[str]:
    """What ``cellpose.models.get_user_models()`` returns: the lines of ``gui_models.txt``."""
    try:
        with open(models_dir() / "gui_models.txt") as fh:
            return [line.rstrip() for line in fh]
    except OSError:
        return []


def _model_url() -> str:
    loaded = _imported_models()
    if loaded is not None:
        return getattr(loaded, "_MODEL_URL", _MODEL_URL)
    url = _source_literals().get("_MODEL_URL")
    return url if isinstance(url, str) else _MODEL_URL


def online(timeout: float = PROBE_SECONDS) -> bool:
    """Whether Cellpose's download server answers within ``timeout`` seconds.

    Name resolution ignores socket timeouts, so the probe runs in a daemon thread
    that is abandoned when slow. ``NAPARI_DLBIO_OFFLINE=1`` skips it.
    """
    if os.environ.get("NAPARI_DLBIO_OFFLINE", "").strip() not in ("", "0"):
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((_HOST, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _looks_like_path(s: str) -> bool:
    return any(c in s for c in ("/", "\\", os.sep)) or s.startswith((".", "~")) or Path(s).suffix != ""


def resolve(name_or_path: str | Path) -> Path:
    """The weight file for a Cellpose model name (``cpsam``...), file or our model folder."""
    s = str(name_or_path).strip()
    if not s:
        raise ModelError("no Cellpose model given: use 'cpsam' or the path of a Cellpose model file")
    p = Path(s).expanduser()
    local = _local_file(p)
    if local is not None:
        return local
    cached = models_dir() / s
    if not any(c in s for c in ("/", "\\", os.sep)) and cached.is_file():
        return cached
    if _looks_like_path(s):
        raise ModelError(f"Cellpose model file not found: {p}")
    known = _known_names()
    if s not in known:
        raise ModelError(
            f"no Cellpose model {s!r}: it is not a file, and Cellpose knows the names "
            f"{', '.join(known)}; give the path of a model file instead"
        )
    return _download(s, cached)


def _local_file(p: Path) -> Path | None:
    """``p`` itself, or the Cellpose file of our model folder ``p``; None when ``p`` does not exist."""
    if p.is_file():
        return p
    if p.is_dir():
        if (p / WEIGHTS).is_file():
            return p / WEIGHTS
        hint = f" (a napari-dlbio model folder has {META_FILE} and {WEIGHTS})"
        raise ModelError(f"{p} is a folder without a Cellpose model file{hint}; choose the model file itself")
    return None


def _download(name: str, cached: Path) -> Path:
    """Cellpose's official model ``name``, downloaded to ``cached``; a clear error when offline."""
    url = _model_url() + name
    missing = (
        f"the Cellpose model {name!r} is not on this computer: Cellpose looks for the file {cached} "
        f"(its models folder {cached.parent}, set by the environment variable CELLPOSE_LOCAL_MODELS_PATH) "
        f"and downloads it from {url} when online"
    )
    howto = (
        f"Download that file on a computer with internet access and copy it to {cached}, "
        "or choose a local Cellpose model file instead (CLI: --model /path/to/model_file)."
    )
    if not online():
        raise ModelError(f"{missing}, but the server cannot be reached (offline?). {howto}")
    from cellpose import models  # only now: its downloader is needed

    try:
        return Path(models.cache_model_path(name))
    except Exception as exc:  # network errors of every kind: say what to do instead
        raise ModelError(f"{missing}; the download failed ({exc}). {howto}") from exc
