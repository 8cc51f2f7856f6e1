"""Progress, cancel, time budget and learning rate: one Lightning callback."""

from __future__ import annotations

import math
import time

import numpy as np

from ...jobs import Deadline, JobContext
from .settings import Settings


def _make_callback(ctx: JobContext, settings: Settings, deadline: Deadline, total_steps: int):
    from lightning.pytorch import Callback

    from ...training import _lr

    class Progress(Callback):
        def __init__(self) -> None:
            self.step = 0
            self.losses: list[float] = []
            self.history: list[dict[str, float]] = []
            self.stopped = "completed"
            self.start = time.monotonic()
            self.average: list | None = None

        def _done(self) -> float:
            return max(self.step / total_steps, deadline.fraction)

        def on_fit_start(self, trainer, module) -> None:
            # CAREamist.train resets this to "all" just before fitting; a few batches of
            # validation patches are enough to follow the loss and cost far less time.
            trainer.limit_val_batches = settings.val_batches

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            lr = _lr(settings.learning_rate, self._done(), self.step)
            for opt in trainer.optimizers:
                for g in opt.param_groups:
                    g["lr"] = lr

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            loss = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    "the training loss became NaN/inf; lower the learning rate or check the data"
                )
            self.step += 1
            self.losses.append(loss)
            if settings.average_last > 0 and self._done() >= 1 - settings.average_last:
                self._update_average(module)
            epoch = trainer.current_epoch + 1
            ctx.report(self._done(), 1.0, f"epoch {epoch}, step {self.step}", loss=loss)
            if ctx.cancelled:
                self.stopped = "cancelled"
                trainer.should_stop = True
                trainer.limit_val_batches = 0  # stop now: no validation of a partial epoch
            elif deadline.passed() and self.stopped == "completed":
                self.stopped = "time budget"
                trainer.should_stop = True

        def _update_average(self, module) -> None:
            # Stochastic weight averaging over the last part of the (cosine-annealed) run,
            # with batch-norm statistics accumulated over the same steps instead of the
            # last few noisy batches.
            import torch

            net = module.model
            params = [p.detach() for p in net.parameters()]
            if self.average is None:
                self.average = [p.clone() for p in params]
                self.n_average = 1
                for m in net.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.reset_running_stats()
                        m.momentum = None  # cumulative average from now on
                return
            self.n_average += 1
            with torch.no_grad():
                for a, p in zip(self.average, params):
                    a.add_(p - a, alpha=1.0 / self.n_average)

        def apply_average(self, net) -> None:
            """Put the averaged weights into ``net``; batch norm goes back to its usual momentum."""
            import torch

            if self.average is None:
                return
            with torch.no_grad():
                for p, a in zip(net.parameters(), self.average):
                    p.copy_(a.to(p.device))
            for m in net.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = 0.1

        def on_train_epoch_end(self, trainer, module) -> None:
            if self.stopped == "cancelled" or not self.losses:
                return  # a cancelled epoch is not a finished one (as in training.fit)
            train_loss = float(np.mean(self.losses))
            self.losses = []
            val = trainer.callback_metrics.get("val_loss")
            entry = {"epoch": len(self.history) + 1, "train_loss": train_loss,
                     "seconds": time.monotonic() - self.start}
            if val is not None and math.isfinite(float(val)):
                entry["val_loss"] = float(val)
            self.history.append(entry)
            extra = {"val_loss": entry["val_loss"]} if "val_loss" in entry else {}
            ctx.report(
                self._done(), 1.0,
                f"epoch {entry['epoch']}: loss {train_loss:.4f}"
                + (f", val {extra['val_loss']:.4f}" if extra else ""),
                epoch=entry["epoch"], train_loss=train_loss, **extra,
            )

    return Progress()
