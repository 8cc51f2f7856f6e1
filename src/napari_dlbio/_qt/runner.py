"""Run a dock's job in the job process and bring its progress to the UI thread.

The job is submitted to a :class:`~napari_dlbio.execution.ProcessExecutor`
(why a process: see :mod:`napari_dlbio.execution.process`); its callbacks run
on the executor's link thread, which stores the newest report and *pokes* the
UI through a Qt signal (queued across threads, so thread-safe). Pokes are
coalesced to at most ``1 / min_interval`` (4) per second: in a napari window
every repaint of any widget recomposes the whole window with its OpenGL canvas
(about 15 ms on a software-rendered display), so the number of updates, not
their content, is what costs. Nothing is lost: the UI always reads the newest
report, epoch reports (the loss-plot points) are queued and delivered all
together, and a trailing check shows the last report of a burst. Each job also
has a bar in napari's activity dock (:class:`~.activity.ActivityBar`).

Errors never escape as bare tracebacks: the job's exception (as text, from the
job process) is shown as a napari notification with a readable message; a job
process that died is reported with its exit code or signal.

Quitting napari while a job runs: ``QApplication.aboutToQuit`` (and, as a
backstop, ``atexit``) calls :func:`~napari_dlbio.execution.shutdown_all`, which
cancels the job, waits for it to save its best model and stops the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from ..execution import Executor, JobCallbacks, JobHandle, ProcessExecutor, shutdown_all
from ..formatting import describe_error, is_user_error
from ..jobs import JobError, Progress
from .activity import ActivityBar

log = logging.getLogger(__name__)


def notify_error(exc: BaseException | str, what: str = "") -> str:
    """Show ``exc`` as a napari error notification; returns the message shown."""
    from napari.utils.notifications import show_error

    msg = exc if isinstance(exc, str) else describe_error(exc)
    if what:
        msg = f"{what} failed: {msg}"
    if isinstance(exc, JobError) and exc.traceback and not exc.user:
        # Not the user's doing: keep the job process's traceback in the log for a bug report.
        log.error("napari-dlbio: %s\n%s", msg, exc.traceback)
    elif isinstance(exc, BaseException) and not is_user_error(exc):
        log.error("napari-dlbio: %s", msg, exc_info=exc)
    show_error(msg)
    return msg


def notify_info(msg: str) -> None:
    from napari.utils.notifications import show_info

    show_info(msg)


QUIT_TIMEOUT = 9.0  # s for a job to stop and save when napari quits (napari must exit within 10 s)
_quit_hooked = False


def _hook_quit() -> None:
    """Once: when the application quits, stop every job process (cancel, save, exit)."""
    global _quit_hooked
    if _quit_hooked:
        return
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(lambda: shutdown_all(QUIT_TIMEOUT))
        _quit_hooked = True


def _release(executor: Executor, *_args) -> None:
    """Shut ``executor`` down on a thread of its own: closing a dock must not wait for a job."""
    threading.Thread(target=executor.shutdown, name="napari-dlbio release", daemon=True).start()


def is_epoch(p: Progress) -> bool:
    """Whether ``p`` reports the end of an epoch (its losses are a point of the loss plot)."""
    return p.kind == "epoch"


class _Relay(QObject):
    """Carries a job's events from the executor's thread to the UI thread (queued signals)."""

    yielded = Signal(object)
    returned = Signal(object)
    finished = Signal()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class JobRunner(QObject):
    """One job at a time for a dock: start, progress, cancel, result or error.

    ``on_progress(latest, epoch_reports)`` runs on the UI thread, at most
    ``1 / min_interval`` times a second. ``executor``: where jobs run (default: a
    job process of this dock's own, started by its first job).
    """

    _poke = Signal()

    def __init__(
        self,
        parent: QObject | None = None,
        on_progress: Callable[[Progress, list[Progress]], None] | None = None,
        min_interval: float = 0.25,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(parent)
        self.on_progress = on_progress
        self.min_interval = float(min_interval)
        self.executor: Executor = executor or ProcessExecutor()
        self.handle: JobHandle | None = None
        self.activity: ActivityBar | None = None   # the running job's bar in napari's activity dock
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
        # napari's progress bar costs ~30 ms to make (its Qt bar runs the event loop): it comes in
        # the turn after the click that started the job, not inside it (bench_ui_stall.py "start").
        self._activity_title = ""
        self._bar_timer = QTimer(self)
        self._bar_timer.setSingleShot(True)
        self._bar_timer.setInterval(0)
        self._bar_timer.timeout.connect(self._open_activity)
        _hook_quit()
        if parent is not None:
            # A closed dock stops its job (a training saves its best epoch) and its job process.
            parent.destroyed.connect(partial(_release, self.executor))

    # -- state --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.handle is not None

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the job (if any) and the job process; blocks up to ``timeout`` s."""
        self.executor.shutdown(timeout)

    # -- start --------------------------------------------------------------------
    def start(
        self,
        job: Any,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_yield: Callable[[Any], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        activity: str = "napari-dlbio job",
    ) -> JobHandle:
        """Submit ``job`` (a request with ``run(ctx)``); a generator job may yield partial results.

        ``activity``: the title of the job's bar in napari's activity dock.
        """
        if self.running:
            raise RuntimeError("a job is already running")
        self._close_activity()
        self._activity_title = activity
        self._bar_timer.start()
        with self._lock:
            self._latest = self._shown = None
            self._events = []
            self._pending = False
        relay = _Relay(self)
        if on_yield is not None:
            relay.yielded.connect(on_yield)
        relay.returned.connect(lambda res: self._returned(res, on_done, on_error))
        relay.finished.connect(lambda: self._finished(relay, on_finished))
        self.handle = self.executor.submit(job, self._callbacks(relay))
        return self.handle

    def _callbacks(self, relay: _Relay) -> JobCallbacks:
        """The executor's callbacks (its thread) -> queued signals to the UI thread."""

        def emit(send: Callable[[], None]) -> None:
            try:
                send()
            except RuntimeError:  # the dock was closed while the job ran: nobody to tell
                self._orphaned()

        return JobCallbacks(progress=self._from_worker,
                            yielded=lambda item: emit(lambda: relay.yielded.emit(item)),
                            done=lambda res: emit(lambda: relay.returned.emit(res)),
                            failed=lambda exc: emit(lambda: relay.returned.emit(_Failed(exc))),
                            finished=lambda: emit(lambda: relay.finished.emit()))

    def _orphaned(self) -> None:
        handle = self.handle
        if handle is not None:
            handle.cancel()

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
        self._trail.stop()
        self._close_activity()
        self.handle = None
        relay.deleteLater()
        if on_finished is not None:
            on_finished()

    # -- progress bridge ------------------------------------------------------------
    def _from_worker(self, p: Progress) -> None:
        """Called on the executor's thread for every report."""
        now = time.monotonic()
        with self._lock:
            self._latest = p
            # Epoch reports are the loss plot's points: every one is kept (delivered with the next poke).
            if is_epoch(p):
                self._events.append(p)
            if self._pending or now - self._last_poke < self.min_interval:
                return
            self._pending = True
            self._last_poke = now
        try:
            self._poke.emit()
        except RuntimeError:  # the dock was closed while the job ran
            self._orphaned()

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
            if self.activity is not None:  # last: napari's bar runs the event loop inside update()
                self.activity.update(p.fraction, p.message)

    def _open_activity(self) -> None:
        if self.handle is not None and self.activity is None:   # the job may have ended already
            self.activity = ActivityBar(self._activity_title)
            if self._shown is not None:
                self.activity.update(self._shown.fraction, self._shown.message)

    def _close_activity(self) -> None:
        self._bar_timer.stop()
        if self.activity is not None:
            self.activity.close()
            self.activity = None

    def _trailing(self) -> None:
        with self._lock:
            stale = self._latest is not None and self._latest is not self._shown and not self._pending
        if stale:
            self._deliver()
