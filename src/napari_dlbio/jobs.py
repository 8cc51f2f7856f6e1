"""Progress and cancellation for long work, as plain callables.

Compute code receives a :class:`JobContext` and calls ``ctx.report(...)`` and
``ctx.check()``; it never knows whether a Qt worker, the CLI's progress bar or a
test is listening. The GUI connects ``on_progress`` to a Qt signal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

ProgressKind = Literal["step", "epoch", "info"]


class Cancelled(Exception):
    """Raised by :meth:`JobContext.check` once the user asked to stop."""


class JobError(Exception):
    """A job's error as it reaches another process: its message, kind and traceback as text.

    Exceptions of the libraries a job uses (torch, CAREamics...) are not sent as
    themselves: unpickling them would import those libraries into napari's process.
    ``user`` says whether the message is written for the user (no traceback shown).
    """

    def __init__(self, message: str, kind: str = "", user: bool = False, traceback: str = "") -> None:
        super().__init__(message)
        self.kind, self.user, self.traceback = kind, user, traceback

    def __reduce__(self):
        return type(self), (str(self), self.kind, self.user, self.traceback)


class WorkerDied(JobError):
    """The job process ended without finishing its job: a crash, the OOM killer, ``kill -9``, a terminate."""

    def __init__(self, message: str, returncode: int | None = None, last: str = "") -> None:
        super().__init__(message, "WorkerDied", True)
        self.returncode, self.last = returncode, last

    def __reduce__(self):
        return type(self), (str(self), self.returncode, self.last)


@dataclass(frozen=True)
class Progress:
    """One report. ``kind``: ``"step"`` (a batch, a tile, an item), ``"epoch"`` (an epoch
    ended: ``metrics`` holds its losses; listeners keep every one) or ``"info"``."""

    done: float
    total: float | None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    kind: ProgressKind = "step"

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


ProgressCallback = Callable[[Progress], Any]


class JobContext:
    """Carries progress reports out of and a cancel request into a job.

    Thread-safe: ``cancel`` may be called from the UI thread while the job runs
    in a worker. ``deadline`` (a :class:`Deadline`) is the whole job's time budget:
    training and the work after it (tuning, evaluation, saving) end within it.
    """

    def __init__(
        self,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self._on_progress = on_progress
        self._should_cancel = should_cancel
        self._cancel = threading.Event()
        self.deadline = deadline if deadline is not None else Deadline(None)
        self.last: Progress | None = None

    def report(
        self,
        done: float,
        total: float | None = None,
        message: str = "",
        kind: ProgressKind = "step",
        **metrics: float,
    ) -> None:
        self.last = Progress(done, total, message, {k: float(v) for k, v in metrics.items()}, kind)
        if self._on_progress is not None:
            self._on_progress(self.last)

    def budget(self, minutes: float | None) -> Deadline:
        """The job's deadline: the one given to the context, else ``minutes`` from now (kept)."""
        if self.deadline.seconds is None and minutes is not None:
            self.deadline = Deadline(minutes)
        return self.deadline

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        if self._should_cancel is not None and self._should_cancel():
            self._cancel.set()
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the user asked to stop."""
        if self.cancelled:
            raise Cancelled("cancelled by the user")

    def span(self, start: float, stop: float, total: float) -> JobContext:
        """A child context whose progress 0..1 maps onto ``start..stop`` of ``total``.

        Used for a batch of images: each image's job reports its own progress and
        the parent shows progress over the whole batch. Cancelling either cancels both.
        """
        parent = self

        def forward(p: Progress) -> None:
            frac = p.fraction if p.fraction is not None else 0.0
            parent.report(start + frac * (stop - start), total, p.message, p.kind, **p.metrics)

        child = JobContext(forward, lambda: parent.cancelled, self.deadline)
        child._cancel = self._cancel
        return child


class Deadline:
    """A wall-clock budget in minutes (``None`` = unlimited), from ``start`` (default: now)."""

    def __init__(self, minutes: float | None, start: float | None = None) -> None:
        self.start = time.monotonic() if start is None else float(start)
        self.seconds = None if minutes is None else float(minutes) * 60.0

    def before(self, fraction: float, at_least: float = 0.0) -> Deadline:
        """A deadline ending earlier: after ``fraction`` of this budget, leaving ``at_least`` s.

        Training ends by such a deadline so that the steps after it (tuning,
        evaluation, saving) still end within the whole budget.
        """
        if self.seconds is None:
            return Deadline(None, self.start)
        end = min(self.seconds * fraction, self.seconds - at_least)
        return Deadline(max(end, 0.0) / 60.0, self.start)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def fraction(self) -> float:
        if not self.seconds:
            return 0.0
        return min(1.0, self.elapsed / self.seconds)

    def passed(self) -> bool:
        return self.seconds is not None and self.elapsed >= self.seconds


def null_context() -> JobContext:
    return JobContext()
