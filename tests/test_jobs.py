import threading
import time

import pytest

from napari_dlbio.jobs import Cancelled, Deadline, JobContext, Progress


def test_report_reaches_listener():
    got = []
    ctx = JobContext(got.append)
    ctx.report(3, 4, "step", loss=0.5)
    assert got == [Progress(3, 4, "step", {"loss": 0.5})]
    assert got[0].fraction == 0.75 and ctx.last is got[0]
    assert Progress(1, None).fraction is None
    assert Progress(9, 4).fraction == 1.0


def test_cancel():
    ctx = JobContext()
    ctx.check()
    ctx.cancel()
    assert ctx.cancelled
    with pytest.raises(Cancelled):
        ctx.check()
    flag = {"stop": False}
    ctx = JobContext(should_cancel=lambda: flag["stop"])
    ctx.check()
    flag["stop"] = True
    with pytest.raises(Cancelled):
        ctx.check()


def test_cancel_from_another_thread():
    ctx = JobContext()
    threading.Timer(0.05, ctx.cancel).start()
    deadline = time.monotonic() + 5
    with pytest.raises(Cancelled):
        while time.monotonic() < deadline:
            ctx.check()
            time.sleep(0.01)


def test_span_maps_progress_and_shares_cancel():
    got = []
    parent = JobContext(got.append)
    child = parent.span(2, 3, 4)   # the third of four images
    child.report(5, 10, "tile 5/10", loss=1.0)
    assert got[-1].done == pytest.approx(2.5) and got[-1].total == 4
    assert got[-1].message == "tile 5/10" and got[-1].metrics == {"loss": 1.0}
    child.report(1, None)          # unknown total: start of the span
    assert got[-1].done == 2
    parent.cancel()
    assert child.cancelled
    other = JobContext()
    other.span(0, 1, 1).cancel()
    assert other.cancelled


def test_deadline():
    assert not Deadline(None).passed() and Deadline(None).fraction == 0.0
    d = Deadline(0.5 / 60)
    assert not d.passed() and 0 <= d.fraction < 1
    d.start -= 1.0
    assert d.passed() and d.fraction == 1.0


def test_job_budget_and_the_fit_deadline_before_it():
    ctx = JobContext()
    assert ctx.deadline.seconds is None and ctx.budget(None).seconds is None
    whole = ctx.budget(2.0)  # minutes from now, kept for the rest of the job
    assert whole.seconds == 120 and ctx.budget(5.0) is whole
    fit = whole.before(0.95, 3.0)
    assert fit.start == whole.start and fit.seconds == 114
    assert Deadline(0.05).before(0.95, 3.0).seconds == 0  # 3 s budget, 3 s reserved
    assert Deadline(None).before(0.5).seconds is None
    given = Deadline(1.0, start=time.monotonic() - 30)
    assert JobContext(deadline=given).budget(10.0) is given and 29 <= given.elapsed < 40
    child = JobContext(deadline=given).span(0, 1, 2)
    assert child.deadline is given


def test_progress_kinds_travel_through_spans():
    got = []
    ctx = JobContext(got.append)
    ctx.span(0, 1, 2).report(1, 1, "epoch 1", kind="epoch", epoch=1, train_loss=0.5)
    assert got[-1].kind == "epoch" and got[-1].metrics == {"epoch": 1.0, "train_loss": 0.5}
    ctx.report(0, 1, "preparing", kind="info")
    assert got[-1].kind == "info" and Progress(0, 1).kind == "step"
