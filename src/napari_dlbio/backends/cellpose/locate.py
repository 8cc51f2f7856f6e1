"""Find a Cellpose model file; fail at once, and clearly, when it is not on this computer.

``CellposeModel("cpsam")`` downloads missing weights (1.2 GB) from Hugging Face and,
given an unknown name, silently falls back to the default model. Here a name is
looked up in Cellpose's models folder first; the downloader runs only when that
file is missing *and* a quick probe (a few seconds at most) reaches the server,
so an offline computer gets a message naming the missing file and what to do.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from ...store import META_FILE, ModelError

WEIGHTS = "cellpose_model"          # the native Cellpose file inside our model folders
_HOST = "huggingface.co"
PROBE_SECONDS = 3.0


def models_dir() -> Path:
    """Cellpose's models folder (``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``)."""
    from cellpose import models

    return Path(models.MODEL_DIR)


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
    if p.is_file():
        return p
    if p.is_dir():
        if (p / WEIGHTS).is_file():
            return p / WEIGHTS
        hint = f" (a napari-dlbio model folder has {META_FILE} and {WEIGHTS})"
        raise ModelError(f"{p} is a folder without a Cellpose model file{hint}; choose the model file itself")
    from cellpose import models

    folder = models_dir()
    cached = folder / s
    if not any(c in s for c in ("/", "\\", os.sep)) and cached.is_file():
        return cached
    if _looks_like_path(s):
        raise ModelError(f"Cellpose model file not found: {p}")
    known = list(dict.fromkeys([*models.MODEL_NAMES, *models.get_user_models()]))
    if s not in known:
        raise ModelError(
            f"no Cellpose model {s!r}: it is not a file, and Cellpose knows the names "
            f"{', '.join(known)}; give the path of a model file instead"
        )
    url = getattr(models, "_MODEL_URL", "https://huggingface.co/mouseland/cellpose-sam/resolve/main/") + s
    missing = (
        f"the Cellpose model {s!r} is not on this computer: Cellpose looks for the file {cached} "
        f"(its models folder {folder}, set by the environment variable CELLPOSE_LOCAL_MODELS_PATH) "
        f"and downloads it from {url} when online"
    )
    howto = (
        f"Download that file on a computer with internet access and copy it to {cached}, "
        "or choose a local Cellpose model file instead (CLI: --model /path/to/model_file)."
    )
    if not online():
        raise ModelError(f"{missing}, but the server cannot be reached (offline?). {howto}")
    try:
        return Path(models.cache_model_path(s))
    except Exception as exc:  # network errors of every kind: say what to do instead
        raise ModelError(f"{missing}; the download failed ({exc}). {howto}") from exc
