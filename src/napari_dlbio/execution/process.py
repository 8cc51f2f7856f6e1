"""Jobs in a separate Python process, so that napari never freezes or dies with a job.

Why a process and not a thread: a job in napari's process shares its GIL (torch
and CAREamics imports, batch assembly and post-processing each stalled the UI
for tens to hundreds of ms) and its fate (a segfault in a library, the kernel's
OOM killer, or torch's threads at exit, status 134, took napari and the user's
unsaved annotations along). A job process has its own GIL and memory; when it
dies, napari reports it and the next job starts a fresh one.

How: ``python -m napari_dlbio.execution.worker FD`` started with ``subprocess``
and connected over a ``socketpair`` wrapped in multiprocessing's ``Connection``.
Not ``multiprocessing``'s spawn context: spawn re-imports the parent's
``__main__`` in the child (napari itself, seconds and hundreds of MB, and a
script's top-level code); a module run with ``-m`` starts only what jobs need.
The process is started by the first job, on the job's thread (never the UI
thread), kept warm between jobs with its loaded models, and exits by itself
after ``idle`` seconds without a job, which gives memory and a GPU back.

Data: messages are pickled, arrays travel as shared-memory files
(:mod:`.shipping`); the exchange folder of a job is deleted when it ends.

What is terminated when: Cancel asks the job to stop (training keeps and saves
its best epoch). A job that has not ended ``cancel_grace`` (10) s after Cancel
is inside a long library call: its process gets SIGTERM, then SIGKILL 3 s later.
The store's atomic save means no half-written model can be left. Quitting
(:func:`shutdown_all`) cancels, waits for the job to end (its model saved), then
asks the process to exit and kills it if it does not.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..jobs import Progress, WorkerDied
from . import shipping
from .base import Executor, JobCallbacks, JobHandle

CANCEL_GRACE = 10.0   # s a job may take to stop after Cancel before its process is terminated
KILL_AFTER = 3.0      # s between SIGTERM and SIGKILL
IDLE = 600.0          # s without a job before the process exits by itself
STARTING = "starting the job process (it loads torch once)"   # the parent's own report
POLL = 0.1            # s between looks at the process while waiting for its messages


class _Process:
    """One job process and napari's end of its connection."""

    def __init__(self, idle: float) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])   # the folder holding napari_dlbio
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "napari_dlbio.execution.worker", str(theirs.fileno()), str(idle)],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False
        self.pid = self.popen.pid
        from .. import backends

        self.send_bytes(shipping.dumps(("setup", list(sys.path), pickle.dumps(backends.registered()))))

    def send_bytes(self, data: bytes) -> None:
        with self.lock:
            self.conn.send_bytes(data)

    def send(self, *msg) -> None:
        self.send_bytes(shipping.dumps(msg))

    def recv(self, timeout: float):
        """The next message, or None after ``timeout``; EOFError once the process is gone."""
        if not self.conn.poll(timeout):
            return None
        return shipping.loads(self.conn.recv_bytes())

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the process to exit; kill it if it has not within ``timeout`` s."""
        try:
            self.send("quit")
        except OSError:
            pass
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.close()

    def close(self) -> None:
        """Close our end once: the job's thread (the process died) and :meth:`ProcessExecutor.shutdown`
        (napari quits) may both get here, and a second close of the same descriptor fails or,
        worse, closes a file opened since under that number."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self.conn.close()


class _Handle(JobHandle):
    def __init__(self, job_id: int, grace: float) -> None:
        super().__init__()
        self.job_id, self.grace = job_id, grace   # grace: s after Cancel before the process is terminated
        self.process: _Process | None = None
        self.terminate_at: float | None = None
        self.terminated = False
        self.last = ""                       # the last progress message, for a crash report

    def cancel(self) -> None:
        if self.cancel_requested or not self.running:
            return
        super().cancel()
        self.terminate_at = time.monotonic() + self.grace
        proc = self.process
        if proc is not None:
            try:
                proc.send("cancel", self.job_id)
            except OSError:
                pass


_live: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()


class ProcessExecutor(Executor):
    """Runs one job at a time in a warm job process (started by the first job)."""

    def __init__(self, idle: float = IDLE, cancel_grace: float = CANCEL_GRACE) -> None:
        self.idle, self.cancel_grace = float(idle), float(cancel_grace)
        self.process: _Process | None = None
        self._handle: _Handle | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0
        shipping.receive_results()
        _live.add(self)

    @property
    def pid(self) -> int | None:
        """The job process's pid while it runs (None before the first job and after it exited)."""
        proc = self.process
        return proc.pid if proc is not None and proc.alive else None

    def submit(self, job: Any, callbacks: JobCallbacks | None = None) -> JobHandle:
        if self._handle is not None and self._handle.running:
            raise RuntimeError("a job is already running")
        self._ids += 1
        handle = _Handle(self._ids, self.cancel_grace)
        self._handle = handle
        self._thread = threading.Thread(target=self._drive, args=(job, callbacks or JobCallbacks(), handle),
                                        name="napari-dlbio job link", daemon=True)
        self._thread.start()
        return handle

    def _drive(self, job: Any, cb: JobCallbacks, handle: _Handle) -> None:
        """The job's thread in napari's process: ship the job, relay its messages, clean up."""
        folder = shipping.new_exchange(f"{handle.job_id}-")
        try:
            data = shipping.dumps(("job", handle.job_id, str(folder), job), folder)
            self._relay(data, cb, handle)
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the caller
            cb.failed(exc)
        finally:
            shipping.remove_exchange(folder)
            handle._finish(cb)

    def _ensure(self, cb: JobCallbacks) -> _Process:
        if self.process is None or not self.process.alive:
            cb.progress(Progress(0, None, STARTING, kind="info"))
            self.process = _Process(self.idle)
        return self.process

    def _relay(self, data: bytes, cb: JobCallbacks, handle: _Handle) -> None:
        """Send the job and pass its messages on until it has finished.

        A process that left before taking the job (it was exiting after its idle
        time, or was killed while idle) is replaced and the job sent again, once:
        nothing of the job had run.
        """
        for attempt in range(2):
            proc = self._ensure(cb)
            handle.process = proc
            try:
                proc.send_bytes(data)
                if handle.cancel_requested:
                    proc.send("cancel", handle.job_id)
            except OSError:
                pass  # gone already: the pump below notices it
            if self._pump(proc, cb, handle, retry=attempt == 0):
                return
            proc.stop()
            self.process = None

    def _pump(self, proc: _Process, cb: JobCallbacks, handle: _Handle, retry: bool) -> bool:
        """Relay messages of ``handle``'s job; False if the process left before taking it (and ``retry``)."""
        started = False
        while True:
            try:
                msg = proc.recv(POLL)
            except (EOFError, OSError):
                msg = _GONE
            if msg is _GONE or (msg is None and not proc.alive):
                if retry and not started:
                    proc.popen.wait()
                    return False
                self._died(proc, handle)
            if msg is None:
                self._watch(proc, handle)
                continue
            kind = msg[0]
            if kind == "bye" and not started:
                return False
            if kind in ("hello", "bye") or msg[1] != handle.job_id:
                continue
            started = True
            if _deliver(kind, msg[2:], cb, handle):
                return True

    def _watch(self, proc: _Process, handle: _Handle) -> None:
        """Between messages: terminate a job that ignores Cancel; notice a dead process."""
        now = time.monotonic()
        if handle.terminate_at is not None and now >= handle.terminate_at:
            if not handle.terminated:
                handle.terminated = True
                proc.popen.terminate()
            elif now >= handle.terminate_at + KILL_AFTER:
                proc.popen.kill()
        if not proc.alive:
            self._died(proc, handle)

    def _died(self, proc: _Process, handle: _Handle) -> None:
        rc = proc.popen.wait()
        proc.close()
        self.process = None
        from .. import store

        store.clean_partial(dead_pid=proc.pid)  # the temp folder of a save it was writing
        raise WorkerDied(death_message(rc, handle.last, handle.terminated, self.cancel_grace), rc, handle.last)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel the running job, give it most of ``timeout`` to end (a training saves), stop the process."""
        end = time.monotonic() + timeout
        handle = self._handle
        if handle is not None and handle.running:
            handle.cancel()
            handle.terminate_at = min(handle.terminate_at or end, end - KILL_AFTER - 1.0)
            handle.wait(max(0.0, end - time.monotonic()))
        proc = self.process
        if proc is not None:
            proc.stop(max(0.5, min(2.0, end - time.monotonic())))
            self.process = None
        if self._thread is not None:
            self._thread.join(max(0.1, end - time.monotonic()))


_GONE = object()  # what _pump "receives" once the connection is closed


def _deliver(kind: str, body: tuple, cb: JobCallbacks, handle: _Handle) -> bool:
    """One message of the job to its callbacks; True when the job has finished."""
    if kind == "progress":
        p: Progress = body[0]
        handle.last = p.message or handle.last
        cb.progress(p)
    elif kind == "yield":
        cb.yielded(body[0])
    elif kind == "done":
        cb.done(body[0])
    elif kind == "failed":
        cb.failed(body[0])
    return kind == "finished"


_SIGNALS = {
    signal.SIGKILL: "was killed (SIGKILL: the system ran out of memory, or it was killed)",
    signal.SIGSEGV: "crashed (SIGSEGV: a segmentation fault in a library)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGTERM: "was terminated (SIGTERM)",
    signal.SIGBUS: "crashed (SIGBUS)",
}


def death_message(returncode: int | None, last: str, terminated: bool, grace: float = CANCEL_GRACE) -> str:
    """What the user reads when the job process ended without finishing its job."""
    if terminated:
        what = f"did not stop within {grace:g} s of Cancel, so its process was stopped"
    elif returncode is not None and returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        what = "process " + _SIGNALS.get(sig, f"ended on {name}")
    else:
        what = f"process exited with status {returncode}"
    during = f" during '{last}'" if last else ""
    return (f"the job {what}{during}. napari and your layers are unaffected; the last saved model is kept; "
            "the next job starts a fresh process")


def shutdown_all(timeout: float = 10.0) -> None:
    """Stop every job process of this session (napari quits): cancel, save, exit, within ``timeout``."""
    end = time.monotonic() + timeout
    for ex in list(_live):
        ex.shutdown(max(1.0, end - time.monotonic()))


atexit.register(shutdown_all)
