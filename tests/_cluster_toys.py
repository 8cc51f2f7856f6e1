"""Toy tasks for DaskRunner tests: top-level and picklable, importing nothing heavy, so that a
worker process (which imports this module to run them) is ready at once."""

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Toy:
    i: int
    seconds: float
    folder: str
    fail: str = ""          # "once": fails on its first run; "always"


def toy(t: Toy) -> int:
    """Leaves started-I-PID, then done-I (or failed-I-UUID) in ``folder``; returns i squared."""
    folder = Path(t.folder)
    (folder / f"started-{t.i}-{os.getpid()}").touch()
    time.sleep(t.seconds)
    if t.fail == "always" or (t.fail == "once" and not list(folder.glob(f"failed-{t.i}-*"))):
        (folder / f"failed-{t.i}-{uuid.uuid4().hex}").touch()
        raise ValueError(f"toy {t.i} is broken")
    (folder / f"done-{t.i}").touch()
    return t.i * t.i


def count(folder: Path, prefix: str) -> int:
    return len(list(folder.glob(prefix + "*")))
