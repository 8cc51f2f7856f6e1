"""Progress, cancel, time budget and learning rate for CAREamics' Lightning training.

Noise2Void trains inside Lightning (CAREamics' own module, data pipeline and
masking), so :func:`napari_dlbio.training.fit` cannot run its loop. This one
callback makes that loop behave like ours: the same learning-rate schedule
(:func:`~napari_dlbio.training.lr_schedule`), the same epoch entries and reports
(:func:`~napari_dlbio.training.epoch_entry`, :func:`~napari_dlbio.training.report_epoch`),
cancel within a batch, the time budget, and weight averaging over the last part.
This module imports Lightning; it is imported only with the N2V model.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from lightning.pytorch import Callback

from ...jobs import Deadline, JobContext
from ...training import StopReason, check_finite, epoch_entry, lr_schedule, report_epoch
from .settings import Settings


class Progress(Callback):
    def __init__(self, ctx: JobContext, settings: Settings, deadline: Deadline, total_steps: int) -> None:
        self.ctx, self.settings, self.deadline, self.total = ctx, settings, deadline, total_steps
        self.step = 0
        self.losses: list[float] = []
        self.history: list[dict[str, float]] = []
        self.stopped: StopReason = "completed"
        self.start = time.monotonic()
        self.average: list | None = None
        self.n_average = 0

    def _done(self) -> float:
        return max(self.step / self.total, self.deadline.fraction)

    def on_fit_start(self, trainer, module) -> None:
        # CAREamist.train resets this to "all" just before fitting; a few batches of
        # validation patches are enough to follow the loss and cost far less time.
        trainer.limit_val_batches = self.settings.val_batches

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        lr = lr_schedule(self.settings.learning_rate, self._done(), self.step)
        for opt in trainer.optimizers:
            for g in opt.param_groups:
                g["lr"] = lr

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        loss = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        check_finite(loss)
        self.step += 1
        self.losses.append(loss)
        if self.settings.average_last > 0 and self._done() >= 1 - self.settings.average_last:
            self._update_average(module.model)
        self.ctx.report(self._done(), 1.0, f"epoch {trainer.current_epoch + 1}, step {self.step}", loss=loss)
        if self.ctx.cancelled:
            self.stopped = "cancelled"
            trainer.should_stop = True
            trainer.limit_val_batches = 0  # stop now: no validation of a partial epoch
        elif self.deadline.passed() and self.stopped == "completed":
            self.stopped = "time budget"
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.stopped == "cancelled" or not self.losses:
            return  # a cancelled epoch is not a finished one (as in training.fit)
        val = trainer.callback_metrics.get("val_loss")
        entry = epoch_entry(len(self.history) + 1, float(np.mean(self.losses)),
                            None if val is None else float(val), time.monotonic() - self.start)
        self.losses = []
        self.history.append(entry)
        report_epoch(self.ctx, self._done(), entry)

    # -- weight averaging ---------------------------------------------------------------
    def _update_average(self, net) -> None:
        # Stochastic weight averaging over the last part of the (cosine-annealed) run,
        # with batch-norm statistics accumulated over the same steps instead of the
        # last few noisy batches.
        params = [p.detach() for p in net.parameters()]
        if self.average is None:
            self.average = [p.clone() for p in params]
            self.n_average = 1
            for m in _batch_norms(net):
                m.reset_running_stats()
                m.momentum = None  # cumulative average from now on
            return
        self.n_average += 1
        with torch.no_grad():
            for a, p in zip(self.average, params):
                a.add_(p - a, alpha=1.0 / self.n_average)

    def apply_average(self, net) -> None:
        """Put the averaged weights into ``net``; batch norm goes back to its usual momentum."""
        if self.average is None:
            return
        with torch.no_grad():
            for p, a in zip(net.parameters(), self.average):
                p.copy_(a.to(p.device))
        for m in _batch_norms(net):
            m.momentum = 0.1


def _batch_norms(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
