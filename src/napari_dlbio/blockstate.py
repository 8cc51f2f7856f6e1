"""What a blockwise prediction keeps in its output store, so an interrupted run can resume.

``<store>/.dlbio/`` holds:

- ``plan.json``: the input, block geometry, model and settings the run was started
  with; a resumed run with other parameters is refused (its blocks would not fit);
- ``<phase>/<block key>``: an empty file per finished block and phase (``predict``,
  ``relabel``), written after the block's data by renaming a temporary file, so a
  marker never stands for a half-written block;
- ``halo/<block key>.npz``: each block's halo labels (compressed), ``raw/<item>.zarr``:
  the labels with per-block ids, ``mapping/<item>.npz``: the final ids after matching.
  Halos and raw labels go once their item is finished.

A kill -9 loses nothing that a marker claims: markers and the files they stand for are
renamed into place after their data is written. (No fsync: surviving a power cut
would cost one per block; a rerun then recomputes the blocks that lost data only if
their markers were lost too.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

STATE_DIR = ".dlbio"
PHASES = ("predict", "relabel")


def clear_state(store: str | Path) -> None:
    """Forget a finished run's progress (``<store>/.dlbio``), e.g. when an output is finalised."""
    shutil.rmtree(Path(store) / STATE_DIR, ignore_errors=True)


def write_marker(path: str | Path) -> None:
    """An empty file at ``path``, appearing at once (a renamed temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    os.replace(tmp, path)


def save_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    """Compressed ``.npz`` at ``path``, appearing only once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


class BlockState:
    """The ``.dlbio`` folder of one output store (or of a temporary folder for in-memory outputs)."""

    def __init__(self, root: str | Path, temporary: bool = False) -> None:
        self.root = Path(root)
        self.dir = self.root / STATE_DIR
        self.temporary = temporary

    @classmethod
    def scratch(cls) -> BlockState:
        """A private folder for a run whose outputs are in memory (removed by :meth:`close`)."""
        return cls(tempfile.mkdtemp(prefix="napari-dlbio-blocks-"), temporary=True)

    def close(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- paths ----------------------------------------------------------------------------
    def marker(self, phase: str, key: str) -> Path:
        return self.dir / phase / key

    def done(self, phase: str, key: str) -> bool:
        return self.marker(phase, key).is_file()

    def halo(self, key: str) -> Path:
        return self.dir / "halo" / f"{key}.npz"

    def raw(self, item: str) -> Path:
        return self.dir / "raw" / f"{item}.zarr"

    def mapping(self, item: str) -> Path:
        return self.dir / "mapping" / f"{item}.npz"

    # -- the plan -------------------------------------------------------------------------
    def read_plan(self) -> dict[str, Any] | None:
        path = self.dir / "plan.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot resume into {self.root}: {path} is unreadable ({exc}); "
                             "rerun without resume to start over") from exc

    def start(self, plan: dict[str, Any]) -> None:
        """A fresh run: earlier progress is removed, the plan written."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".plan.")
        with os.fdopen(fd, "w") as fh:
            json.dump(plan, fh, indent=1)
        os.replace(tmp, self.dir / "plan.json")

    def check(self, plan: dict[str, Any], saved: dict[str, Any]) -> None:
        """Refuse to resume a run started with other parameters, naming them."""
        diff = [k for k in sorted(set(plan) | set(saved)) if plan.get(k) != saved.get(k)]
        if diff:
            what = "; ".join(f"{k}: {_show(saved.get(k))} then, {_show(plan.get(k))} now" for k in diff)
            raise ValueError(
                f"cannot resume into {self.root}: it was started with other parameters ({what}). "
                "Rerun with the same image, model, settings and block size, or without resume to start over")

    def drop_item(self, item: str, keys: list[str]) -> None:
        """An item is finished: its raw labels and halos are no longer needed."""
        shutil.rmtree(self.raw(item), ignore_errors=True)
        for key in keys:
            self.halo(key).unlink(missing_ok=True)


def _show(v: Any) -> str:
    if isinstance(v, list) and all(isinstance(a, int) for a in v):
        return "x".join(str(a) for a in v)
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."
