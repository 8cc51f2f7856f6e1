"""Where named models live and what a model's name may be.

Apart from :mod:`.store` (which re-exports all of it) so that the bioimage.io importer,
which the store calls to open zips, needs nothing from the store itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ModelError(Exception):
    """A model that cannot be found, read or used; the message says why."""


def store_root() -> Path:
    """Where named models live: ``$NAPARI_DLBIO_HOME/models`` or ``~/.napari-dlbio/models``."""
    home = os.environ.get("NAPARI_DLBIO_HOME")
    base = Path(home) if home else Path.home() / ".napari-dlbio"
    return base / "models"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ModelError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)"
        )
    return name
