"""The executors: jobs in a job process (the docks') and in this process (the CLI's), same interface."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from _jobs import Crash, Echo, Fail, Sleep, Stubborn, Yields

from napari_dlbio.execution import InProcessExecutor, JobCallbacks, ProcessExecutor, shipping
from napari_dlbio.execution.process import STARTING
from napari_dlbio.jobs import Cancelled, JobError, WorkerDied


@pytest.fixture
def executor():
    ex = ProcessExecutor()
    yield ex
    ex.shutdown(5)


def _ours() -> list[str]:
    return [p.name for p in shipping.exchange_root().glob(f"napari-dlbio-{os.getpid()}-*")]


def _job_report(p, event: threading.Event) -> None:
    """Set ``event`` at the job's own first report (not the executor's "starting the job process")."""
    if p.message != STARTING:
        event.set()


def _gone(pid: int, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a child that exited but was not reaped yet counts as gone
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.05)
    return False


def test_large_arrays_travel_as_shared_files(executor):
    img = np.arange(2_000_000, dtype=np.float32).reshape(1000, 2000)
    before = img.copy()
    out = executor.run(Echo(img))
    assert out["kind"] == "memmap" and out["writeable"] is False     # the job read a map, could not write
    assert out["pid"] != os.getpid() and out["pid"] == executor.pid
    assert type(out["double"]) is np.ndarray and out["double"].flags.writeable
    assert np.array_equal(out["double"], before * 2) and np.array_equal(img, before)
    assert _ours() == []          # the exchange folder went with the job


def test_partial_results_and_return_value(executor):
    got: list = []
    n = executor.run(Yields(3), JobCallbacks(yielded=got.append))
    assert n == 3 and [int(a[0, 0]) for a in got] == [0, 1, 2] and got[0].shape == (600, 600)


def test_progress_and_cancel(executor):
    reports: list = []
    first = threading.Event()

    def progress(p) -> None:
        if p.message != STARTING:
            reports.append(p)
            first.set()

    handle = executor.submit(Sleep(60), JobCallbacks(progress=progress))
    assert first.wait(30)
    t0 = time.monotonic()
    handle.cancel()
    assert handle.wait(5) and time.monotonic() - t0 < 2
    assert reports[0].message == "tick 1"
    # Step reports are coalesced in the job process (at most ~10 per second).
    assert len(reports) < 5 + 12 * (time.monotonic() - t0 + 1)
    with pytest.raises(Cancelled):
        executor.run(Sleep(60), JobCallbacks(progress=lambda p: executor._handle.cancel()))


def test_errors_arrive_as_text(executor):
    with pytest.raises(JobError) as info:
        executor.run(Fail())
    assert info.value.kind == "RuntimeError" and not info.value.user
    assert "boom inside a library" in str(info.value) and "Traceback" in info.value.traceback
    with pytest.raises(JobError) as info:
        executor.run(Fail("value"))
    assert info.value.user and str(info.value) == "the image has 7 channels; choose 1"


@pytest.mark.parametrize("sig, words", [("segv", "SIGSEGV"), ("kill", "SIGKILL")])
def test_a_crash_is_reported_and_the_next_job_gets_a_fresh_process(executor, sig, words):
    from _jobs import SIGNALS

    first = executor.run(Echo(np.zeros(3)))["pid"]
    with pytest.raises(WorkerDied) as info:
        executor.run(Crash(SIGNALS[sig]))
    msg = str(info.value)
    assert words in msg and "about to crash" in msg and "last saved model is kept" in msg
    assert info.value.returncode == -SIGNALS[sig]
    assert _gone(first) and _ours() == []
    assert executor.run(Echo(np.zeros(3)))["pid"] != first


def test_kill_from_outside_while_busy(executor):
    started = threading.Event()
    handle = executor.submit(Sleep(60), JobCallbacks(progress=lambda p: _job_report(p, started),
                                                     failed=lambda e: errors.append(e)))
    errors: list = []
    assert started.wait(30)
    os.kill(executor.pid, signal.SIGKILL)
    assert handle.wait(10)
    assert isinstance(errors[0], WorkerDied) and "SIGKILL" in str(errors[0]) and "tick" in str(errors[0])


def test_a_job_deaf_to_cancel_is_terminated():
    ex = ProcessExecutor(cancel_grace=0.5)
    try:
        errors: list = []
        started = threading.Event()
        handle = ex.submit(Stubborn(60), JobCallbacks(progress=lambda p: _job_report(p, started), failed=errors.append))
        assert started.wait(30)
        pid = ex.pid
        t0 = time.monotonic()
        handle.cancel()
        assert handle.wait(10) and time.monotonic() - t0 < 3
        assert isinstance(errors[0], WorkerDied) and "did not stop within 0.5 s of Cancel" in str(errors[0])
        assert _gone(pid)
        assert ex.run(Echo(np.zeros(3)))["pid"] != pid
    finally:
        ex.shutdown(5)


def test_idle_process_exits_and_the_next_job_starts_another():
    ex = ProcessExecutor(idle=0.3)
    try:
        pid = ex.run(Echo(np.zeros(3)))["pid"]
        assert _gone(pid, 10)
        assert ex.run(Echo(np.zeros(3)))["pid"] != pid
    finally:
        ex.shutdown(5)


def test_shutdown_mid_job_leaves_no_process_or_thread():
    ex = ProcessExecutor()
    started = threading.Event()
    handle = ex.submit(Sleep(60), JobCallbacks(progress=lambda p: _job_report(p, started)))
    assert started.wait(30)
    pid = ex.pid
    t0 = time.monotonic()
    ex.shutdown(5)
    assert time.monotonic() - t0 < 5 and not handle.running
    assert _gone(pid) and ex.pid is None and _ours() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("napari-dlbio")]


def test_in_process_executor_has_the_same_interface():
    ex = InProcessExecutor()
    out = ex.run(Echo(np.ones(4)))
    assert out["pid"] == os.getpid() and out["kind"] == "ndarray"
    got: list = []
    assert ex.run(Yields(2), JobCallbacks(yielded=got.append)) == 2 and len(got) == 2
    started = threading.Event()
    handle = ex.submit(Sleep(60), JobCallbacks(progress=lambda p: _job_report(p, started)))
    assert started.wait(5)
    handle.cancel()
    assert handle.wait(5)
    with pytest.raises(RuntimeError, match="boom"):
        ex.run(Fail())


def test_a_process_killed_while_idle_is_replaced_for_the_next_job(executor):
    pid = executor.run(Echo(np.zeros(3)))["pid"]
    os.kill(pid, signal.SIGKILL)          # between jobs (the OOM killer, a user): nothing to report
    assert executor.run(Echo(np.zeros(3)))["pid"] != pid
