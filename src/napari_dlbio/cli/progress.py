"""The command line's progress bar and its Ctrl-C handling."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable

from ..execution import Call, InProcessExecutor, JobCallbacks
from ..formatting import clock
from ..jobs import Cancelled, Deadline, JobContext, Progress


class ProgressBar:
    """A one-line text progress bar on stderr, redrawn in place.

    Keeps the latest epoch and losses reported by the training loop so the line
    shows them even between epoch reports. When stderr is not a terminal (logs,
    CI) it prints a plain line per 10 % step instead of carriage returns.
    """

    def __init__(self, title: str = "", stream=None, enabled: bool = True, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.title = title
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.metrics: dict[str, float] = {}
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False
        self.message = ""

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        self.metrics.update(p.metrics)
        # The loop's end-of-epoch report repeats the losses in its message (the line
        # shows them anyway); the step reports ("epoch 3, step 120") say where training is.
        epoch = p.metrics.get("epoch") if p.kind == "epoch" else None
        self.message = f"epoch {int(epoch)} done" if epoch is not None else p.message
        frac = p.fraction
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.1 and not (frac is not None and frac >= 1):
                return
            self._last_draw = now
            self.stream.write("\r" + self.line(frac, self.message) + "\x1b[K")
            self._drawn = True
        else:
            decile = -1 if frac is None else int(frac * 10)
            if decile <= self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(self.line(frac, self.message) + "\n")
        self.stream.flush()

    def line(self, frac: float | None, message: str) -> str:
        elapsed = time.monotonic() - self.start
        if frac is None:
            bar, pct, eta = "-" * self.width, "  ?%", ""
        else:
            n = int(round(frac * self.width))
            bar = "#" * n + "-" * (self.width - n)
            pct = f"{frac * 100:3.0f}%"
            eta = f" < {clock(elapsed / frac - elapsed)}" if 0.01 < frac < 1 else ""
        parts = [self.title, f"{pct} [{bar}]", clock(elapsed) + eta, message]
        m = self.metrics
        if "loss" in m:
            parts.append(f"loss {m['loss']:.4f}")
        if "val_loss" in m:
            parts.append(f"val {m['val_loss']:.4f}")
        return " ".join(p for p in parts if p)

    def close(self) -> None:
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False


class _CancelOnInterrupt:
    """First Ctrl-C asks the job to stop (best model kept); a second one aborts."""

    def __init__(self, context: Callable[[], JobContext | None]) -> None:
        self.context = context      # the running job's context (None before it started)
        self._old = None

    def __enter__(self) -> _CancelOnInterrupt:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        ctx = self.context()
        if ctx is None or ctx.cancelled:
            raise KeyboardInterrupt
        ctx.cancel()
        sys.stderr.write("\ncancelling after the current step (Ctrl-C again to abort)...\n")
        sys.stderr.flush()

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def train_with_progress(on_progress, bar: ProgressBar, log, *args, deadline: Deadline | None = None,
                        **kwargs):
    """``tasks.train(*args, **kwargs)`` with a progress bar and Ctrl-C as cancel.

    ``deadline``, the whole job's time budget, reaches ``tasks.train`` in its
    JobContext. Returns the outcome, or ``None`` when training was cancelled before
    anything was saved (the reason is logged).
    """
    from .. import tasks

    executor = InProcessExecutor(deadline)
    try:
        with _CancelOnInterrupt(lambda: executor.context):
            return executor.run(Call(tasks.train, args, kwargs), JobCallbacks(progress=on_progress))
    except Cancelled as exc:
        bar.close()
        log(str(exc))
        return None
    finally:
        bar.close()
