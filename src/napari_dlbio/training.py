"""The one torch training loop: batches, AdamW, schedule, validation, best checkpoint.

Backends provide a batch source and a loss (through :mod:`napari_dlbio.recipe`);
this loop handles the rest the same way for every network: a cosine
learning-rate schedule over the epoch *or* time budget, progress after every
batch (train loss) and epoch (validation loss), cancel checked between batches,
and the best-on-validation weights restored at the end, also when the user
cancels or the time budget runs out. The Noise2Void backend trains inside
Lightning and uses the same schedule and epoch bookkeeping (:func:`lr_schedule`,
:func:`epoch_entry`, :func:`report_epoch`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import TrainSettings
from .jobs import Cancelled, Deadline, JobContext

StopReason = Literal["completed", "time budget", "cancelled"]
WARMUP_STEPS = 20


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    stopped: StopReason = "completed"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    # Network outputs on the validation samples computed after the fit (threshold
    # tuning), handed to the evaluation so it does not run the network again.
    raw_val: list | None = field(default=None, repr=False)

    @property
    def epochs(self) -> int:
        return len(self.history)

    def summary(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_loss": self.best_loss,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 1),
        }


def lr_schedule(base: float, fraction: float, step: int, warmup: int = WARMUP_STEPS) -> float:
    """Learning rate after ``step`` batches with ``fraction`` of the budget spent.

    A linear warm-up over the first ``warmup`` batches, then a cosine decay to 2 %
    of ``base`` over the epoch or time budget, whichever runs out first.
    """
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * max(0.02, 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def epoch_entry(epoch: int, train_loss: float, val_loss: float | None, seconds: float) -> dict[str, float]:
    entry = {"epoch": epoch, "train_loss": train_loss, "seconds": seconds}
    if val_loss is not None and math.isfinite(val_loss):
        entry["val_loss"] = val_loss
    return entry


def report_epoch(ctx: JobContext, done: float, entry: dict[str, float]) -> None:
    """The end-of-epoch report every listener keeps (the loss plot's points)."""
    val = entry.get("val_loss")
    text = f"epoch {entry['epoch']}: loss {entry['train_loss']:.4f}" + ("" if val is None else f", val {val:.4f}")
    losses = {k: entry[k] for k in ("train_loss", "val_loss") if k in entry}
    ctx.report(done, 1.0, text, kind="epoch", epoch=entry["epoch"], **losses)


def check_finite(loss: float) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError("the training loss became NaN/inf; lower the learning rate or check the data")


class _Progress:
    """Where training stands: steps done against the epoch budget and the clock."""

    def __init__(self, settings: TrainSettings, deadline: Deadline) -> None:
        self.total = settings.epochs * settings.steps_per_epoch
        self.deadline = deadline
        self.step = 0
        self.start = time.monotonic()

    @property
    def done(self) -> float:
        return max(self.step / self.total, self.deadline.fraction)


def fit(
    net,
    loss_fn: Callable[[Any], Any],
    next_batch: Callable[[], Any],
    val_batches: Callable[[], Iterable[Any]] | None,
    settings: TrainSettings,
    ctx: JobContext,
    params: Iterable | None = None,
    deadline: Deadline | None = None,
    on_epoch: Callable[[int, FitResult], None] | None = None,
) -> FitResult:
    """Train ``net`` with ``loss_fn(batch) -> scalar tensor`` on ``next_batch()`` batches.

    ``val_batches()`` yields validation batches (the training loss stands in when
    there is no validation data). ``deadline`` (default: ``settings.minutes`` from
    now) ends training early; ``on_epoch(epoch, result)`` runs after each epoch.
    Returns the history; the net holds the best weights.
    """
    import torch

    opt = torch.optim.AdamW(params if params is not None else net.parameters(), lr=settings.learning_rate,
                            weight_decay=settings.weight_decay)
    state = _Progress(settings, deadline or Deadline(settings.minutes))
    result = FitResult()
    best: dict | None = None
    try:
        for epoch in range(1, settings.epochs + 1):
            train_loss = _train_epoch(net, opt, loss_fn, next_batch, settings, ctx, state, epoch)
            val_loss = _validate(net, loss_fn, val_batches) if val_batches else None
            entry = epoch_entry(epoch, train_loss, val_loss, time.monotonic() - state.start)
            result.history.append(entry)
            key = val_loss if val_loss is not None else train_loss
            if key < result.best_loss:
                result.best_loss, result.best_epoch = key, epoch
                best = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
            report_epoch(ctx, state.done, entry)
            if on_epoch is not None:
                on_epoch(epoch, result)
            if state.deadline.passed():
                result.stopped = "time budget"
                break
    except Cancelled:
        result.stopped = "cancelled"
    finally:
        if best is not None:
            net.load_state_dict(best)
        net.eval()
        result.seconds = time.monotonic() - state.start
    return result


def _train_epoch(net, opt, loss_fn, next_batch, settings, ctx, state: _Progress, epoch: int) -> float:
    net.train()
    losses = []
    for _ in range(settings.steps_per_epoch):
        ctx.check()
        lr = lr_schedule(settings.learning_rate, state.done, state.step)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = next_batch()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(batch)
        value = float(loss.detach())
        check_finite(value)
        loss.backward()
        opt.step()
        losses.append(value)
        state.step += 1
        ctx.report(state.done, 1.0, f"epoch {epoch}, step {state.step}", loss=value)
        if state.deadline.passed():
            break
    return sum(losses) / len(losses)


def _validate(net, loss_fn, val_batches) -> float | None:
    import torch

    net.eval()
    vals = []
    with torch.no_grad():
        for b in val_batches():
            vals.append(float(loss_fn(b)))
    return sum(vals) / len(vals) if vals else None
