"""The one torch training loop: batches, Adam, schedule, validation, best checkpoint.

Backends provide a batch source and a loss; this loop handles the rest the same
way for every network: a cosine learning-rate schedule over the epoch *or* time
budget, progress after every batch (train loss) and epoch (validation loss),
cancel checked between batches, and the best-on-validation weights restored at
the end, also when the user cancels or the time budget runs out.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import TrainSettings
from .jobs import Deadline, JobContext


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    stopped: str = "completed"  # completed | time budget | cancelled
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

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


def fit(
    net,
    loss_fn: Callable[[Any], Any],
    next_batch: Callable[[], Any],
    val_batches: Callable[[], Iterable[Any]] | None,
    settings: TrainSettings,
    ctx: JobContext,
    params: Iterable | None = None,
    on_epoch: Callable[[int, FitResult], None] | None = None,
) -> FitResult:
    """Train ``net`` with ``loss_fn(batch) -> scalar tensor`` on ``next_batch()`` batches.

    ``val_batches()`` yields validation batches (the training loss stands in when
    there is no validation data). Returns the history; the net holds the best weights.
    """
    import torch

    deadline = Deadline(settings.minutes)
    opt = torch.optim.AdamW(params if params is not None else net.parameters(), lr=settings.learning_rate,
                            weight_decay=getattr(settings, "weight_decay", 1e-4))
    result = FitResult()
    best_state = None
    total_steps = settings.epochs * settings.steps_per_epoch
    step = 0
    start = time.monotonic()
    try:
        for epoch in range(settings.epochs):
            net.train()
            losses = []
            for _ in range(settings.steps_per_epoch):
                ctx.check()
                frac = max(step / total_steps, deadline.fraction)
                for g in opt.param_groups:
                    g["lr"] = _lr(settings.learning_rate, frac, step)
                batch = next_batch()
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        "the training loss became NaN/inf; lower the learning rate or check the data"
                    )
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                _report(ctx, settings, deadline, step, total_steps, epoch, losses[-1])
                if deadline.passed():
                    break
            train_loss = sum(losses) / len(losses)
            val_loss = _validate(net, loss_fn, val_batches) if val_batches else None
            key = val_loss if val_loss is not None else train_loss
            entry = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": time.monotonic() - start}
            if val_loss is not None:
                entry["val_loss"] = val_loss
            result.history.append(entry)
            if key < result.best_loss:
                result.best_loss, result.best_epoch = key, epoch + 1
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
            ctx.report(
                _done(settings, deadline, step, total_steps), 1.0,
                f"epoch {epoch + 1}: loss {train_loss:.4f}" + (f", val {val_loss:.4f}" if val_loss is not None else ""),
                epoch=epoch + 1, train_loss=train_loss, **({"val_loss": val_loss} if val_loss is not None else {}),
            )
            if on_epoch is not None:
                on_epoch(epoch + 1, result)
            if deadline.passed():
                result.stopped = "time budget"
                break
    except Exception as exc:
        from .jobs import Cancelled

        if not isinstance(exc, Cancelled):
            raise
        result.stopped = "cancelled"
    finally:
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        result.seconds = time.monotonic() - start
    return result


def _lr(base: float, frac: float, step: int, warmup: int = 20) -> float:
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * max(0.02, 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _done(settings: TrainSettings, deadline: Deadline, step: int, total: int) -> float:
    return max(step / total, deadline.fraction)


def _report(ctx, settings, deadline, step, total, epoch, loss) -> None:
    ctx.report(_done(settings, deadline, step, total), 1.0, f"epoch {epoch + 1}, step {step}", loss=loss)


def _validate(net, loss_fn, val_batches) -> float | None:
    import torch

    net.eval()
    vals = []
    with torch.no_grad():
        for b in val_batches():
            vals.append(float(loss_fn(b)))
    return sum(vals) / len(vals) if vals else None
