"""Durable, kill-safe file operations of the model store (see :mod:`napari_dlbio.store`).

Plain file-system steps: fsync, write ``model.json`` last, swap a new version in,
discard the previous one, and judge whether a save's temporary folder is still
owned by a running process. Kept apart from the store's naming and metadata rules.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from pathlib import Path

META_FILE = "model.json"

# A save writes into ``.NAME.tmp-HOST-PID-XXXXXXXX`` next to the model. HOST (a hash of
# the host name) and PID say who owns it, so a lookup in another process (or on another
# machine sharing the folder) can tell a running save from one that was killed.
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[a-z0-9_]{8}$")
# Saves of releases before this scheme wrote ``.NAME.XXXXXXXX`` (no owner): removed by age only.
LEGACY_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}$")
# An owner we cannot ask (another host, Windows, a PID reused since) is presumed dead after
# this long: writing weights takes minutes at most, and a temp that holds model.json is
# milliseconds from its renames (if a suspended save wakes up later, it fails cleanly).
_WRITING_STALE_S = 6 * 3600
_WRITTEN_STALE_S = 60


def write_last(tmp: Path, meta: str) -> None:
    """Make the weights durable, then write model.json: a folder with a readable
    model.json is complete, even after a power cut."""
    for path in tmp.rglob("*"):
        if path.is_file() or path.is_dir():  # files' data and sub-folders' entries
            fsync(path)
    with open(tmp / META_FILE, "w") as fh:
        fh.write(meta)
        fh.flush()
        os.fsync(fh.fileno())
    fsync(tmp)


def swap_in(tmp: Path, dest: Path) -> None:
    if not dest.exists():
        tmp.rename(dest)
        fsync(dest.parent)
        return
    old = old_of(dest)
    discard(old)  # a leftover of a completed swap that nobody could remove yet
    dest.rename(old)
    tmp.rename(dest)
    # The new name must be on disk before the previous version goes.
    fsync(dest.parent)
    discard(old)


def old_of(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def discard(old: Path) -> None:
    """Remove a ``.NAME.old``, model.json first, so a removal cut short never leaves a
    folder that recovery would take for a complete previous version."""
    try:
        (old / META_FILE).unlink()
    except FileNotFoundError:
        pass
    except OSError:
        return
    shutil.rmtree(old, ignore_errors=True)


def fsync(path: Path) -> None:
    """Flush a file or a folder's entries to disk. Windows cannot open folders (NTFS
    journals renames itself) and fsyncs only handles open for writing."""
    if os.name == "nt":
        if path.is_dir():
            return
        flags = os.O_RDWR
    else:
        flags = os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stale(tmp: Path, host: str | None, pid: int | None, dead_pid: int | None) -> bool:
    if host == HOST and pid is not None and (pid == dead_pid or not pid_alive(pid)):
        return True
    try:
        age = time.time() - tmp.stat().st_mtime
    except OSError:
        return True  # gone already (renamed in or removed by its save): nothing runs there
    return age > (_WRITTEN_STALE_S if (tmp / META_FILE).is_file() else _WRITING_STALE_S)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has this PID (a zombie counts as alive)."""
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate it there: rely on the age instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process
    return True
