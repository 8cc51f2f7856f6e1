"""training.fit with a tiny linear model: learning, best weights, cancel, time budget."""

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_dlbio.config import TrainSettings  # noqa: E402
from napari_dlbio.jobs import JobContext  # noqa: E402
from napari_dlbio.training import fit  # noqa: E402


def _problem(seed=0):
    """Linear regression y = x @ w; the loss can go to ~0."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, generator=g)
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 1)

    def next_batch():
        x = torch.randn(16, 4, generator=g)
        return x, x @ w

    xv = torch.randn(64, 4, generator=g)
    val = [(xv, xv @ w)]

    def loss_fn(batch):
        x, y = batch
        return torch.nn.functional.mse_loss(net(x), y)

    return net, loss_fn, next_batch, (lambda: val)


def _settings(**kw):
    base = dict(epochs=6, steps_per_epoch=10, learning_rate=0.2, device="cpu")
    base.update(kw)
    return TrainSettings(**base)


def test_loss_goes_down_and_progress_is_reported():
    net, loss_fn, next_batch, val = _problem()
    reports = []
    res = fit(net, loss_fn, next_batch, val, _settings(), JobContext(reports.append))
    assert res.stopped == "completed" and res.epochs == 6
    h = res.history
    assert h[-1]["val_loss"] < 0.1 * h[0]["val_loss"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert res.best_loss == min(e["val_loss"] for e in h)
    steps = [r for r in reports if "loss" in r.metrics]
    epochs = [r for r in reports if "epoch" in r.metrics]
    assert len(steps) == 60 and len(epochs) == 6
    assert [r.metrics["epoch"] for r in epochs] == [1, 2, 3, 4, 5, 6]
    assert reports[-1].fraction == pytest.approx(1.0)
    assert not net.training  # left in eval mode


def test_best_weights_are_restored():
    net, loss_fn, next_batch, val = _problem()
    snapshots = {}

    def on_epoch(epoch, result):
        snapshots[epoch] = {k: v.clone() for k, v in net.state_dict().items()}
        if epoch == 2:
            # Ruin the weights: later epochs must score worse than epoch 2 for a while.
            with torch.no_grad():
                net.weight.mul_(-5)

    res = fit(net, loss_fn, next_batch, val, _settings(epochs=3, learning_rate=1e-4), JobContext(),
              on_epoch=on_epoch)
    assert res.best_epoch == 2
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, snapshots[2][k])


def test_cancel_keeps_the_best_epoch():
    net, loss_fn, next_batch, val = _problem()
    ctx = JobContext()
    seen = []

    def listener(p):
        seen.append(p)
        if p.metrics.get("epoch") == 2:
            ctx.cancel()

    ctx._on_progress = listener
    res = fit(net, loss_fn, next_batch, val, _settings(epochs=50), ctx)
    assert res.stopped == "cancelled"
    assert res.epochs == 2 and res.best_epoch in (1, 2)
    with torch.no_grad():
        x, y = val()[0]
        assert float(loss_fn((x, y))) == pytest.approx(res.best_loss, rel=1e-5)


def test_cancel_before_the_first_epoch():
    net, loss_fn, next_batch, val = _problem()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ctx = JobContext()
    ctx.cancel()
    res = fit(net, loss_fn, next_batch, val, _settings(), ctx)
    assert res.stopped == "cancelled" and res.best_epoch == -1 and res.epochs == 0
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_time_budget_stops_training():
    net, loss_fn, next_batch, val = _problem()

    def slow_batch():
        time.sleep(0.01)
        return next_batch()

    t0 = time.monotonic()
    res = fit(net, loss_fn, slow_batch, val, _settings(epochs=10_000, minutes=0.5 / 60), JobContext())
    took = time.monotonic() - t0
    assert res.stopped == "time budget"
    assert 1 <= res.epochs < 10_000 and res.best_epoch >= 1
    assert 0.4 < took < 10


def test_without_validation_the_training_loss_decides():
    net, loss_fn, next_batch, _ = _problem()
    res = fit(net, loss_fn, next_batch, None, _settings(epochs=3), JobContext())
    assert res.best_epoch >= 1 and "val_loss" not in res.history[0]
    assert res.best_loss == min(e["train_loss"] for e in res.history)


def test_nan_loss_is_a_clear_error():
    net, _, next_batch, val = _problem()

    def nan_loss(batch):
        return net(batch[0]).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(net, nan_loss, next_batch, val, _settings(), JobContext())


def test_fit_summary_is_plain_data():
    net, loss_fn, next_batch, val = _problem()
    res = fit(net, loss_fn, next_batch, val, _settings(epochs=1), JobContext())
    s = res.summary()
    assert set(s) == {"epochs", "best_epoch", "best_loss", "stopped", "seconds"}
    assert isinstance(s["best_loss"], float) and np.isfinite(s["best_loss"])
