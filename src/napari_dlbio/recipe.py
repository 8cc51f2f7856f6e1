"""The one training recipe for networks trained by napari-dlbio's own loop.

Every torch backend trains the same way: merge the settings (fine-tuning keeps the
architecture), check the samples, normalise and build targets once, seed, move
the network to the device, fix the validation batches, :func:`training.fit`,
then tune post-processing on the validation images while there is time, and give
the device back. A backend subclasses :class:`TorchModel` and supplies only what
differs: its network (:meth:`~TorchModel.build_net`), its targets
(:meth:`~TorchModel.prepare`), its patch sampler (:meth:`~TorchModel.example`), its
loss (:meth:`~TorchModel.loss`), optionally its post-fit tuning
(:meth:`~TorchModel.tune`) and its post-processing (:meth:`~ModelBase.postprocess`).

Time budget: the whole job ends within ``minutes``. Training stops at
:data:`FIT_SHARE` of the budget; tuning stops when the budget is spent (keeping
the best choice so far); the evaluation reuses the tuning's network outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import device as devices
from .backends.base import ModelBase
from .data import Sample
from .jobs import Cancelled, Deadline, JobContext
from .training import FitResult, fit

FIT_SHARE = 0.95        # of the time budget; the rest is for tuning, evaluation and saving
FIT_RESERVE_S = 3.0     # at least this many seconds are left after the fit
MAX_TUNE = 30           # validation images used for post-fit tuning (bounds its time)


class TorchModel(ModelBase):
    """A model whose torch network (``self.net``) trains in :func:`run`."""

    net: Any = None

    # -- what a backend supplies ---------------------------------------------------------
    def build_net(self):
        """A new network for ``self.settings``, ``self.n_channels`` and ``self.ndim``."""
        raise NotImplementedError

    def prepare(self, sample: Sample) -> Any:
        """One training sample -> what :meth:`example` cuts patches from (normalised, targets)."""
        raise NotImplementedError

    def example(self, item: Any, rng: np.random.Generator, augment: bool) -> tuple:
        """One training example (a patch and its targets, numpy arrays) from a prepared item."""
        raise NotImplementedError

    def draw_batch(self, prepared: Sequence[Any], n: int, rng: np.random.Generator, augment: bool) -> tuple:
        """``n`` examples of randomly chosen prepared items, stacked (the input first)."""
        picks = (prepared[int(rng.integers(len(prepared)))] for _ in range(n))
        return collate([self.example(item, rng, augment) for item in picks])

    def fixed_batch(self, items: Sequence[Any], rng: np.random.Generator) -> tuple:
        """One example of each item, not augmented (validation)."""
        return collate([self.example(item, rng, False) for item in items])

    def loss(self, net, batch: tuple):
        """Scalar loss tensor of ``net`` on a batch already on the device."""
        raise NotImplementedError

    def prepare_all(self, samples: list[Sample], training: bool) -> list:
        """Every sample prepared; a backend may leave some out (and say so in :meth:`fit_metrics`)."""
        return [self.prepare(s) for s in samples]

    def fit_settings(self, settings, prepared: list):
        """The settings :func:`training.fit` runs with (e.g. steps per epoch from the data)."""
        return settings

    def adapt(self, samples: list[Sample]) -> None:
        """Last look at the training data before preparing it (e.g. the number of classes)."""

    def before_fit(self, prepared: list, rng: np.random.Generator) -> None:
        """Initialise from the data (e.g. output biases) before the first step."""

    def tune(self, raw: list, samples: list[Sample], ctx: JobContext, deadline: Deadline) -> dict:
        """Tune post-processing on validation outputs ``raw``; returns what to record in metrics."""
        return {}

    def fit_metrics(self) -> dict:
        """What to record in the model's metrics after training (e.g. thresholds in use)."""
        return {}

    def tuning_samples(self, train: list[Sample], val: list[Sample]) -> list[Sample]:
        """Labelled samples to tune post-processing on after training (none: no tuning)."""
        return []

    def check_sample(self, s: Sample) -> None:
        """Refuse a training sample this model cannot learn from, naming it."""
        from .normalize import check_image

        if self.spec.needs_labels and s.target is None:
            raise ValueError(f"sample {s.source!r} has no labels; the {self.spec.title} backend learns "
                             "from labels")
        if s.image.ndim != self.ndim + 1:
            raise ValueError(f"sample {s.source!r}: expected a {self.ndim}D item (C, *spatial), "
                             f"got shape {s.image.shape}")
        if not self.accepts_channels(s.image.shape[0]):
            raise ValueError(f"sample {s.source!r} has {s.image.shape[0]} channel(s), the model takes "
                             f"{self.n_channels}")
        if s.target is not None and s.target.shape != s.image.shape[1:]:
            raise ValueError(f"sample {s.source!r}: labels shape {s.target.shape} differs from the "
                             f"image's {s.image.shape[1:]}")
        if s.mask is not None and s.target is not None and s.mask.shape != s.target.shape:
            raise ValueError(f"sample {s.source!r}: mask shape {s.mask.shape} differs from labels "
                             f"{s.target.shape}")
        if s.target is not None and s.target.size and s.target.min() < 0:
            raise ValueError(f"sample {s.source!r}: labels must not be negative")
        check_image(s.image, f"image {s.source!r}")

    # -- the recipe ------------------------------------------------------------------------
    def train(self, train: list[Sample], val: list[Sample], settings, ctx: JobContext) -> FitResult:
        return run(self, train, val, settings, ctx)

    def memory_format(self, device):
        return devices.memory_format(self.ndim, device)

    def release(self) -> None:
        import torch

        if self.net is not None:
            dev = next(self.net.parameters()).device
            self.net.to("cpu", memory_format=torch.contiguous_format)
            devices.release(dev)


def run(model: TorchModel, train: list[Sample], val: list[Sample], settings, ctx: JobContext) -> FitResult:
    """Train ``model`` in place with the shared recipe; it holds the best weights afterwards."""
    if not train:
        raise ValueError("no training samples")
    model.settings = s = model.merge_settings(settings)
    for smp in train + val:
        model.check_sample(smp)
    model.adapt(train + val)
    if model.net is None:
        model.net = model.build_net()
    ctx.report(0, 1, "preparing training data", kind="info")
    prep_train = model.prepare_all(train, True)
    prep_val = model.prepare_all(val, False)
    result = _fit(model, prep_train, prep_val, model.fit_settings(s, prep_train), ctx)
    tune_on = model.tuning_samples(train, val)
    if result.best_epoch >= 1 and result.stopped != "cancelled" and tune_on:
        _tune(model, tune_on[:MAX_TUNE], result, ctx, reuse=tune_on is val)
    for k, v in model.fit_metrics().items():
        result.metrics.setdefault(k, v)
    return result


def _fit(model: TorchModel, prep_train: list, prep_val: list, s, ctx: JobContext) -> FitResult:
    import torch

    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    model.before_fit(prep_train, np.random.default_rng(s.seed + 2))
    dev = devices.select_device(s.device)
    fmt = model.memory_format(dev)

    def on_device(batch: tuple) -> tuple:
        out = [torch.from_numpy(np.ascontiguousarray(b)) if isinstance(b, np.ndarray) else b for b in batch]
        out = [t.to(dev) for t in out]
        out[0] = out[0].contiguous(memory_format=fmt)
        return tuple(out)

    def next_batch():
        return on_device(model.draw_batch(prep_train, s.batch_size, rng, s.augment))

    fixed = [on_device(b) for b in fixed_batches(model, prep_val, s)]
    with devices.placed(model.net, dev, model.ndim) as net:
        return fit(net, lambda b: model.loss(net, b), next_batch, (lambda: fixed) if fixed else None, s, ctx,
                   deadline=ctx.budget(s.minutes).before(FIT_SHARE, FIT_RESERVE_S))


def fixed_batches(model: TorchModel, prepared: list, s) -> list[tuple]:
    """Validation batches built once, so every epoch is scored on the same patches.

    Patches go round the validation images (each one as often as the others), without
    augmentation, from a fixed seed.
    """
    if not prepared:
        return []
    rng = np.random.default_rng(12345)
    n = max(s.val_patches, len(prepared))
    order = [prepared[i % len(prepared)] for i in range(n)]
    bs = max(1, s.batch_size)
    return [model.fixed_batch(order[i:i + bs], rng) for i in range(0, n, bs)]


def collate(examples: Sequence[tuple]) -> tuple:
    """Examples (tuples of arrays) -> a batch: each element stacked along a new first axis."""
    return tuple(np.stack(parts) for parts in zip(*examples))


def _tune(model: TorchModel, samples: list[Sample], result: FitResult, ctx: JobContext, reuse: bool) -> None:
    """Network outputs on the tuning samples, then the backend's tuning, within the budget.

    With ``reuse`` (the samples are the validation samples) the outputs are kept for
    the evaluation that follows. A cancel here keeps the trained weights and the
    previous post-processing settings.
    """
    deadline = ctx.budget(None)
    predict = model.coerce_predict(None)
    inner = JobContext(should_cancel=lambda: ctx.cancelled)
    raw: list = []
    try:
        for i, smp in enumerate(samples):
            if deadline.passed():
                break
            ctx.report(i, len(samples), f"tuning on validation image {i + 1}/{len(samples)}", kind="info")
            raw.append(model.forward(model.check_item(smp.image, predict), predict, inner))
        if raw:
            result.metrics.update(model.tune(raw, samples[:len(raw)], ctx, deadline))
            result.metrics["thresholds_from"] = "validation" if reuse else "training"
        if reuse:
            result.raw_val = raw
    except Cancelled:
        result.metrics["thresholds_from"] = "defaults (cancelled)"
