"""Run a job in a napari worker thread and bring its progress to the UI thread.

The job gets a :class:`~napari_dlbio.jobs.JobContext`. Its progress callback runs
in the worker; it stores the newest report and *pokes* the UI through a Qt
signal (queued across threads, so thread-safe). Pokes are coalesced to at most
``1 / min_interval`` (10) per second: a tiny network can report hundreds of
batches a second, and one repaint of a dock costs 10-20 ms in a napari window
(the whole window is composited with its OpenGL canvas), so repainting for each
would freeze the window. Nothing is lost: the UI
always reads the newest report, epoch reports (the loss-plot points) are queued
and delivered all, and a trailing check shows the last report of a burst.

Errors never escape as bare tracebacks: the job's exception is returned to the
UI thread and shown as a napari notification with a readable message.

Why a plain Python thread and not napari's ``create_worker``: workers run in
Qt's thread pool, where sip creates and deletes the Python thread state around
each task. torch's pybind11 layer caches a thread state per OS thread, so a
second torch job on a pooled thread (train, then "Predict with this model")
crashed the whole application (SIGSEGV in ``pybind11::gil_scoped_acquire``,
torch 2.11 + PyQt6 6.11). A ``threading.Thread`` owns one thread state for its
whole life, which torch handles fine. Results and progress still reach the UI
through queued Qt signals.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from ..formatting import describe_error, is_user_error
from ..jobs import JobContext, Progress

log = logging.getLogger(__name__)


def notify_error(exc: BaseException | str, what: str = "") -> str:
    """Show ``exc`` as a napari error notification; returns the message shown."""
    from napari.utils.notifications import show_error

    msg = exc if isinstance(exc, str) else describe_error(exc)
    if what:
        msg = f"{what} failed: {msg}"
    if isinstance(exc, BaseException) and not is_user_error(exc):
        # Not the user's doing: keep the traceback in the log for a bug report.
        log.error("napari-dlbio: %s", msg, exc_info=exc)
    show_error(msg)
    return msg


def notify_info(msg: str) -> None:
    from napari.utils.notifications import show_info

    show_info(msg)


_warmed = threading.Event()
warm_thread: threading.Thread | None = None


def warm_up_torch() -> None:
    """Import torch (and what its first optimizer step imports) in the background, once.

    Loading torch's libraries holds the GIL for a second or more; done on the
    first Train click it froze the window right when the user pressed the button.
    Started when a dock opens, it overlaps with choosing layers and settings.
    """
    global warm_thread
    if _warmed.is_set():
        return
    _warmed.set()

    def load() -> None:
        try:
            import torch

            net = torch.nn.Conv2d(1, 1, 3)
            opt = torch.optim.AdamW(net.parameters())
            net(torch.zeros(1, 1, 8, 8)).sum().backward()
            opt.step()
        except Exception:  # noqa: BLE001 - only a warm-up; the real job reports problems
            pass

    warm_thread = threading.Thread(target=load, name="napari-dlbio warm-up", daemon=True)
    warm_thread.start()


_switch_lock = threading.Lock()
_jobs_running = 0
_saved_switch = None
JOB_SWITCH_INTERVAL = 0.001


def _job_started() -> None:
    """While a job runs, let the UI thread get the GIL within ~1 ms instead of 5 ms.

    The job's Python code (batch assembly, post-processing) holds the GIL between
    torch calls; at the default 5 ms switch interval every Qt call of the UI
    thread could wait that long, several times per repaint.
    """
    global _jobs_running, _saved_switch
    with _switch_lock:
        if _jobs_running == 0:
            _saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved_switch, JOB_SWITCH_INTERVAL))
        _jobs_running += 1


def _job_ended() -> None:
    global _jobs_running
    with _switch_lock:
        _jobs_running = max(0, _jobs_running - 1)
        if _jobs_running == 0 and _saved_switch is not None:
            sys.setswitchinterval(_saved_switch)


def is_epoch(p: Progress) -> bool:
    """Whether ``p`` reports the end of an epoch (its losses are a point of the loss plot)."""
    return p.kind == "epoch"


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _work(fn: Callable[[JobContext], Any], ctx: JobContext, relay: _Relay) -> None:
    """The worker thread: run the job, pass on what it yields, then its result or exception."""

    def emit(signal, *args) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the dock was closed while the job ran: nobody to tell
            ctx.cancel()

    try:
        res = fn(ctx)
        if inspect.isgenerator(res):
            res = _drain(res, lambda item: emit(relay.yielded, item))
        emit(relay.returned, res)
    except BaseException as exc:  # noqa: BLE001 - handed to the UI thread
        emit(relay.returned, _Failed(exc))
    finally:
        emit(relay.finished)


def _drain(gen, each: Callable[[Any], None]) -> Any:
    """Hand every item of ``gen`` to ``each``; returns the generator's return value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        each(item)


class _Relay(QObject):
    """Carries a job's events from its thread to the UI thread (queued signals)."""

    yielded = Signal(object)
    returned = Signal(object)
    finished = Signal()


class JobRunner(QObject):
    """One job at a time for a dock: start, progress, cancel, result or error.

    ``on_progress(latest, epoch_reports)`` runs on the UI thread, at most
    ``1 / min_interval`` times a second.
    """

    _poke = Signal()

    def __init__(
        self,
        parent: QObject | None = None,
        on_progress: Callable[[Progress, list[Progress]], None] | None = None,
        min_interval: float = 0.1,
    ) -> None:
        super().__init__(parent)
        self.on_progress = on_progress
        self.min_interval = float(min_interval)
        self.ctx: JobContext | None = None
        self.worker = None
        self.n_deliveries = 0
        self._lock = threading.Lock()
        self._latest: Progress | None = None
        self._shown: Progress | None = None
        self._events: list[Progress] = []
        self._pending = False
        self._last_poke = 0.0
        self._poke.connect(self._deliver)
        # A child timer dies with this object, so a late tick cannot reach a deleted widget.
        self._trail = QTimer(self)
        self._trail.setSingleShot(True)
        self._trail.setInterval(int(self.min_interval * 1000) + 20)
        self._trail.timeout.connect(self._trailing)

    # -- state --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        if self.ctx is not None:
            self.ctx.cancel()

    # -- start --------------------------------------------------------------------
    def start(
        self,
        fn: Callable[[JobContext], Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_yield: Callable[[Any], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ):
        """Run ``fn(ctx)`` in a worker thread; a generator ``fn`` may yield partial results."""
        if self.running:
            raise RuntimeError("a job is already running")
        ctx = JobContext(self._from_worker)
        self.ctx = ctx
        with self._lock:
            self._latest = self._shown = None
            self._events = []
            self._pending = False

        relay = _Relay(self)
        if on_yield is not None:
            relay.yielded.connect(on_yield)
        relay.returned.connect(lambda res: self._returned(res, on_done, on_error))
        relay.finished.connect(lambda: self._finished(relay, on_finished))
        worker = threading.Thread(target=_work, args=(fn, ctx, relay), name="napari-dlbio job", daemon=True)
        self.worker = worker
        _job_started()
        worker.start()
        return worker

    def _returned(self, res, on_done, on_error) -> None:
        # Show the last progress first, so it cannot overwrite the outcome afterwards.
        self._deliver()
        self._trail.stop()
        self._shown = self._latest
        if isinstance(res, _Failed):
            (on_error or notify_error)(res.exc)
        elif on_done is not None:
            on_done(res)

    def _finished(self, relay: _Relay, on_finished) -> None:
        _job_ended()
        self._trail.stop()
        self.worker = None
        self.ctx = None
        relay.deleteLater()
        if on_finished is not None:
            on_finished()

    # -- progress bridge ------------------------------------------------------------
    def _from_worker(self, p: Progress) -> None:
        """Called in the worker thread for every report."""
        now = time.monotonic()
        with self._lock:
            self._latest = p
            # Epoch reports are the loss plot's points: every one is kept and delivered at once.
            important = is_epoch(p)
            if important:
                self._events.append(p)
            if self._pending or (not important and now - self._last_poke < self.min_interval):
                return
            self._pending = True
            self._last_poke = now
        try:
            self._poke.emit()
        except RuntimeError:  # the dock was closed while the job ran
            pass

    def _deliver(self) -> None:
        with self._lock:
            p, events = self._latest, self._events
            self._events = []
            self._pending = False
            fresh = p is not None and p is not self._shown
            self._shown = p
        if (fresh or events) and self.on_progress is not None:
            self.n_deliveries += 1
            self.on_progress(p, events)
        if fresh:
            # The last report of a burst may have been coalesced away: look again soon.
            self._trail.start()

    def _trailing(self) -> None:
        with self._lock:
            stale = self._latest is not None and self._latest is not self._shown and not self._pending
        if stale:
            self._deliver()
