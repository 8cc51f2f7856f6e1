"""The executor interface: submit a job, hear its progress, results and end; cancel it.

A *job* is a picklable object with ``run(ctx)`` (a
:class:`~napari_dlbio.requests.TrainRequest`, a
:class:`~napari_dlbio.requests.PredictRequest`, or :class:`Call` around any
function); ``run`` returns a value or is a generator whose items are partial
results (one per predicted image). Two executors serve the same interface:

- :class:`InProcessExecutor` runs the job in this process (a thread, or the
  caller's thread with :meth:`Executor.run`): the command line, which has no UI
  to protect, and the core tests.
- :class:`~napari_dlbio.execution.process.ProcessExecutor` runs it in a job
  process: napari's docks, so that a job can neither freeze nor crash napari.

Callbacks run on a thread of the executor, never on the caller's UI thread; a
Qt dock forwards them through queued signals (:mod:`napari_dlbio._qt.runner`).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..jobs import Cancelled, JobContext, JobError, Progress


def _noop(*_args) -> None:
    return None


@dataclass
class JobCallbacks:
    """What a caller hears of a job; each runs on the executor's thread."""

    progress: Callable[[Progress], Any] = _noop
    yielded: Callable[[Any], Any] = _noop     # a partial result (a generator job's item)
    done: Callable[[Any], Any] = _noop        # the job's return value
    failed: Callable[[BaseException], Any] = _noop
    finished: Callable[[], Any] = _noop       # always last, after done or failed


@dataclass
class Call:
    """A job that calls ``fn(*args, ctx=ctx, **kwargs)``: any function becomes a job."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def run(self, ctx: JobContext) -> Any:
        return self.fn(*self.args, ctx=ctx, **self.kwargs)


class JobHandle:
    """A submitted job: ``cancel()`` asks it to stop; ``wait()`` until it has finished."""

    def __init__(self) -> None:
        self._finished = threading.Event()
        self.cancel_requested = False

    def cancel(self) -> None:
        self.cancel_requested = True

    @property
    def running(self) -> bool:
        return not self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job has finished (its ``finished`` callback has run)."""
        return self._finished.wait(timeout)

    def _finish(self, cb: JobCallbacks) -> None:
        """The job's last step on the executor's thread: ``finished``, then waiters are released."""
        try:
            cb.finished()
        finally:
            self._finished.set()


class Executor:
    """Runs jobs; one at a time per executor."""

    def submit(self, job: Any, callbacks: JobCallbacks | None = None) -> JobHandle:
        raise NotImplementedError

    def run(self, job: Any, callbacks: JobCallbacks | None = None) -> Any:
        """Run ``job`` to its end and return its value (raise its error); callbacks as in submit."""
        out: dict[str, Any] = {}
        self.submit(job, _collecting(callbacks or JobCallbacks(), out)).wait()
        return _outcome(out)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel a running job, wait for it (at most ``timeout`` s), release what the executor holds."""


def _collecting(cb: JobCallbacks, out: dict[str, Any]) -> JobCallbacks:
    """``cb`` that also keeps the job's value or error in ``out`` (for :meth:`Executor.run`)."""

    def done(value) -> None:
        out["value"] = value
        cb.done(value)

    return JobCallbacks(cb.progress, cb.yielded, done, lambda exc: out.setdefault("error", exc), cb.finished)


def _outcome(out: dict[str, Any]) -> Any:
    if "error" in out:
        raise out["error"]
    return out.get("value")


def drive(job: Any, ctx: JobContext, cb: JobCallbacks) -> None:
    """Run ``job`` here: its items to ``yielded``, then ``done`` or ``failed``; never raises."""
    try:
        res = job.run(ctx)
        if inspect.isgenerator(res):
            res = yield_all(res, cb.yielded)
        cb.done(res)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller
        cb.failed(exc)


def yield_all(gen, each: Callable[[Any], Any]) -> Any:
    """Hand every item of ``gen`` to ``each``; returns the generator's return value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        each(item)


class _LocalHandle(JobHandle):
    def __init__(self, ctx: JobContext) -> None:
        super().__init__()
        self.ctx = ctx

    def cancel(self) -> None:
        super().cancel()
        self.ctx.cancel()


class InProcessExecutor(Executor):
    """Jobs in this process: :meth:`run` in the caller's thread, :meth:`submit` in a new thread.

    A plain ``threading.Thread`` per job, not a pool: torch caches a Python thread
    state per OS thread, which a pool's recycled threads broke (a SIGSEGV in torch's
    bindings on the second job).
    """

    def __init__(self, deadline=None) -> None:
        self.deadline = deadline
        self._thread: threading.Thread | None = None
        self._handle: _LocalHandle | None = None

    def _start(self, job: Any, cb: JobCallbacks) -> tuple[_LocalHandle, Callable[[], None]]:
        if self._handle is not None and self._handle.running:
            raise RuntimeError("a job is already running")
        ctx = JobContext(cb.progress, deadline=self.deadline)
        handle = _LocalHandle(ctx)
        self._handle = handle

        def work() -> None:
            try:
                drive(job, ctx, cb)
            finally:
                handle._finish(cb)

        return handle, work

    def submit(self, job: Any, callbacks: JobCallbacks | None = None) -> JobHandle:
        handle, work = self._start(job, callbacks or JobCallbacks())
        self._thread = threading.Thread(target=work, name="napari-dlbio job", daemon=True)
        self._thread.start()
        return handle

    def run(self, job: Any, callbacks: JobCallbacks | None = None) -> Any:
        out: dict[str, Any] = {}
        _, work = self._start(job, _collecting(callbacks or JobCallbacks(), out))
        work()  # in the caller's thread: Ctrl-C handlers and the terminal stay where they are
        return _outcome(out)

    @property
    def context(self) -> JobContext | None:
        """The running (or last) job's context: the CLI's Ctrl-C handler cancels through it."""
        return self._handle.ctx if self._handle is not None else None

    def shutdown(self, timeout: float = 10.0) -> None:
        if self._handle is not None and self._handle.running:
            self._handle.cancel()
            self._handle.wait(timeout)


__all__ = ["Call", "Cancelled", "Executor", "InProcessExecutor", "JobCallbacks", "JobError", "JobHandle",
           "drive"]
