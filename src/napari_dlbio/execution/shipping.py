"""How data crosses the process boundary: messages are pickled, large arrays are not.

A job (its request: images, labels) and its results (labels, denoised images)
can be gigabytes. Pickling them into the connection would copy them twice and,
in napari's process, hold the GIL while doing it. Instead every numpy array of
at least :data:`INLINE_BYTES` is written into a file of the job's *exchange
folder* (on ``/dev/shm``, i.e. shared memory, where the system has it; else the
temporary folder) and the pickle carries only its name, dtype and shape. The
other side maps the file (``numpy.memmap``): the job reads the user's image
without a copy and cannot change it (read-only map); results are copied out of
the map on the receiving thread and their files deleted right away.

The parent process owns the exchange folder: it removes it when the job ends,
and also when the job process died (a ``kill -9`` leaves nothing behind).
Other arrays (dask, zarr) pickle as what they are: lazy references to files.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._durable import pid_alive
from ..jobs import Cancelled, JobError

INLINE_BYTES = 1 << 20  # smaller arrays travel inside the pickle: a file would cost more than it saves
_PREFIX = "napari-dlbio-"


def exchange_root() -> Path:
    """Where exchange folders go: shared memory (``/dev/shm``) if the system has it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def new_exchange(tag: str = "") -> Path:
    """A fresh exchange folder named after this process (so leftovers can be traced to it)."""
    path = exchange_root() / f"{_PREFIX}{os.getpid()}-{tag}{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o700)
    return path


def remove_exchange(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def clean_stale_exchanges() -> int:
    """Remove exchange folders of processes that no longer run (a crashed napari); returns how many."""
    n = 0
    for d in exchange_root().glob(f"{_PREFIX}*"):
        pid = d.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


def _shared(arr: np.ndarray) -> bool:
    return type(arr) in (np.ndarray, np.memmap) and arr.nbytes >= INLINE_BYTES and not arr.dtype.hasobject


class _Pickler(pickle.Pickler):
    """Pickles large numpy arrays as references to files of the exchange folder."""

    def __init__(self, file, folder: Path | None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.folder = folder

    def reducer_override(self, obj):
        if self.folder is not None and isinstance(obj, np.ndarray) and _shared(obj):
            name = uuid.uuid4().hex + ".npy"
            # open_memmap writes the .npy header; the copy below releases the GIL.
            out = np.lib.format.open_memmap(self.folder / name, mode="w+", dtype=obj.dtype, shape=obj.shape)
            out[...] = obj
            out.flush()
            del out
            return _attach, (str(self.folder / name),)
        if isinstance(obj, BaseException) and not isinstance(obj, (Cancelled, JobError)):
            return _portable(obj).__reduce__()
        return NotImplemented


def _portable(exc: BaseException) -> JobError:
    """An error as text: unpickling a library's own exception would import the library."""
    import traceback

    from ..formatting import describe_error, is_user_error

    tb = "".join(traceback.format_exception(exc))
    return JobError(describe_error(exc), type(exc).__name__, is_user_error(exc), tb)


def dumps(obj: Any, folder: Path | None = None) -> bytes:
    """``obj`` pickled; with ``folder`` (a job's exchange folder) its large arrays go there as files."""
    buf = io.BytesIO()
    _Pickler(buf, folder).dump(obj)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


# Set in a process that receives results: arrays are then copied out of their
# files and the files removed (results outlive the job); the job process keeps
# its inputs as read-only maps instead.
_copy_out = False


def receive_results() -> None:
    """In the process that takes results (napari's): copy arrays out and delete their files."""
    global _copy_out
    _copy_out = True


def _attach(path: str) -> np.ndarray:
    mapped = np.load(path, mmap_mode="r")
    if not _copy_out:
        return mapped
    arr = np.array(mapped)
    del mapped
    try:
        os.unlink(path)
    except OSError:
        pass
    return arr
