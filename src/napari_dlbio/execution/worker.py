"""The job process: ``python -m napari_dlbio.execution.worker FD`` runs jobs sent over FD.

Started by :class:`~napari_dlbio.execution.process.ProcessExecutor`; it imports
torch and the backends, never Qt. The main thread runs one job at a time; a
reader thread takes messages from napari's process meanwhile, so a Cancel
reaches a job that is busy. Between jobs the process stays warm (torch imported,
the loaded models in :data:`napari_dlbio.requests.MODELS`); after ``idle``
seconds without a job it says goodbye and exits, which gives memory (and a GPU)
back. The next job starts a fresh process.

Messages (pickled with :mod:`.shipping`) to the worker: ``("job", id, folder, job)``,
``("cancel", id)``, ``("quit",)``; from it: ``("hello", pid)``, ``("started", id)``,
``("progress", id, Progress)``, ``("yield", id, item)``, ``("done", id, value)``,
``("failed", id, error)``, ``("finished", id)``, ``("bye",)``.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from ..jobs import JobContext, Progress
from . import shipping
from .base import JobCallbacks, drive

# Step reports sent at most this often (epoch and info reports always): a tiny
# network reports hundreds of batches a second, and each message costs napari's
# process a wake-up.
MIN_INTERVAL = 0.1


class _Link:
    """The worker's end of the connection: sends are serialised (job thread and reader).

    When napari's process is gone (it crashed or was killed), sends fail: the link
    then calls ``on_gone`` once, which cancels the job, so a training still saves
    its best epoch, and the worker exits.
    """

    def __init__(self, conn: Connection, on_gone) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.folder: Path | None = None
        self.gone = False
        self.on_gone = on_gone

    def send(self, *msg) -> None:
        if self.gone:
            return
        data = shipping.dumps(msg, self.folder)
        try:
            with self.lock:
                self.conn.send_bytes(data)
        except OSError:
            self.gone = True
            self.on_gone()


class _Coalescer:
    """Passes epoch/info reports on at once and step reports at most every MIN_INTERVAL."""

    def __init__(self, send) -> None:
        self.send, self.last_sent, self.pending = send, 0.0, None

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.kind == "step" and now - self.last_sent < MIN_INTERVAL:
            self.pending = p
            return
        self.pending, self.last_sent = None, now
        self.send(p)

    def flush(self) -> None:
        if self.pending is not None:
            self.send(self.pending)
            self.pending = None


class Worker:
    def __init__(self, conn: Connection, idle: float) -> None:
        self.link = _Link(conn, self.stop)
        self.idle = idle
        self.jobs: queue.Queue = queue.Queue()
        self.ctx: JobContext | None = None
        self.current = None
        self.cancelled: set[int] = set()   # cancel can arrive before its job starts
        self.quitting = False

    def stop(self) -> None:
        """Cancel the running job and leave after it (napari quits, or its process is gone)."""
        self.quitting = True
        if self.ctx is not None:
            self.ctx.cancel()
        self.jobs.put(None)

    def read(self) -> None:
        """The reader thread: jobs into the queue, cancel/quit to the running job."""
        while True:
            try:
                msg = shipping.loads(self.link.conn.recv_bytes())
            except (EOFError, OSError):  # napari's process is gone: stop too
                msg = ("quit",)
            if msg[0] == "setup":
                _setup(*msg[1:])
            elif msg[0] == "job":
                self.jobs.put(msg[1:])
            elif msg[0] == "cancel":
                self.cancelled.add(msg[1])
                if self.ctx is not None and self.current == msg[1]:
                    self.ctx.cancel()
            elif msg[0] == "quit":
                self.stop()
                return

    def serve(self) -> None:
        threading.Thread(target=self.read, name="napari-dlbio job reader", daemon=True).start()
        self.link.send("hello", os.getpid())
        while not self.quitting:
            try:
                item = self.jobs.get(timeout=self.idle)
            except queue.Empty:
                break  # idle: give the memory back
            if item is None:
                break
            self.run(*item)
        self.link.send("bye")

    def run(self, job_id: int, folder: str, job) -> None:
        self.link.folder = Path(folder)
        send = self.link.send
        coalesce = _Coalescer(lambda p: send("progress", job_id, p))
        self.ctx, self.current = JobContext(coalesce), job_id
        if job_id in self.cancelled:
            self.ctx.cancel()
        send("started", job_id)
        cb = JobCallbacks(yielded=lambda item: (coalesce.flush(), send("yield", job_id, item)),
                          done=lambda v: (coalesce.flush(), send("done", job_id, v)),
                          failed=lambda e: (coalesce.flush(), send("failed", job_id, e)))
        try:
            drive(job, self.ctx, cb)
        finally:
            self.ctx = self.current = None
            send("finished", job_id)
            self.link.folder = None


def _setup(path: list[str], specs: bytes) -> None:
    """napari's import path and the backends it registered at run time (``backends.register``)."""
    import pickle

    from .. import backends

    sys.path.extend(p for p in path if p not in sys.path)
    for spec in pickle.loads(specs):
        backends.register(spec)


def main(argv: list[str]) -> int:
    import signal

    # Ctrl-C in napari's terminal reaches the whole process group: napari decides
    # what happens to the job (it cancels it when it quits), not the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, idle = int(argv[0]), float(argv[1]) if len(argv) > 1 else 600.0
    conn = Connection(fd)
    Worker(conn, idle).serve()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
