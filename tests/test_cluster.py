"""dask.distributed as the engine: DaskRunner on a LocalCluster, and ``predict --cluster`` on the real
``dask scheduler`` / ``dask worker`` command-line tools.

Every test is bounded in time (SIGALRM) and stops what it started, also when it fails.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from _cluster_toys import Toy, count, toy

pytest.importorskip("distributed")
pytest.importorskip("torch")

import napari_dlbio  # noqa: E402
from napari_dlbio import cli, cluster, metrics, samples  # noqa: E402
from napari_dlbio.cli import on_cluster  # noqa: E402
from napari_dlbio.jobs import Cancelled, JobContext  # noqa: E402
from napari_dlbio.requests import MODELS, ModelSource  # noqa: E402

SRC = str(Path(napari_dlbio.__file__).resolve().parents[1])  # workers import this checkout
LIMIT_S = {"test_predict_on_the_dask_command_line_tools": 120, "test_ctrl_c_stops_scheduling_files": 120}

# A U-Net that learns enough in ~60 steps for its labels to mean something (AP@0.5 ~0.8).
TINY = ["--epochs", "3", "--steps-per-epoch", "20", "--batch-size", "4", "--patch-size", "32", "--depth", "2",
        "--base-width", "8", "--val-patches", "2", "--device", "cpu", "-q"]


@pytest.fixture(autouse=True)
def _time_limit(request):
    """Fail a test that runs past its limit instead of hanging the suite (fixtures still clean up)."""
    limit = LIMIT_S.get(request.node.name, 45)

    def over(*_):
        raise TimeoutError(f"{request.node.name} ran over {limit} s")

    old = signal.signal(signal.SIGALRM, over)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def local2():
    """A LocalCluster of 2 single-threaded worker processes, shared by the module's tests."""
    cl = cluster.connect("local:2")
    yield cl
    cl.close()


def test_results_arrive_as_they_complete(local2, tmp_path):
    todo = [Toy(0, 1.5, str(tmp_path))] + [Toy(i, 0.05, str(tmp_path)) for i in range(1, 6)]
    got = list(local2.runner().map(toy, todo, JobContext()))
    assert {t.i: r for t, r in got} == {i: i * i for i in range(6)}
    assert got[0][0].i != 0  # the slow first task did not hold the others back
    assert count(tmp_path, "started-") == 6  # each ran once


def test_cancel_lets_running_tasks_finish_and_starts_nothing_more(local2, tmp_path):
    ctx = JobContext()
    got = []
    with pytest.raises(Cancelled):
        for task, res in local2.runner().map(toy, [Toy(i, 0.4, str(tmp_path)) for i in range(8)], ctx):
            got.append(task.i)
            ctx.cancel()
    started, done = count(tmp_path, "started-"), count(tmp_path, "done-")
    # Two workers of one thread: the first result and the one running beside it, then nothing.
    assert len(got) == started == done == 2


def test_cancel_while_no_worker_is_there_returns_at_once(tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as lonely, \
            Client(lonely, set_as_default=False) as client:
        ctx = JobContext()
        threading.Timer(0.5, ctx.cancel).start()
        start = time.monotonic()
        with pytest.raises(Cancelled):
            list(cluster.DaskRunner(client).map(toy, [Toy(i, 0.0, str(tmp_path)) for i in range(3)], ctx))
        assert time.monotonic() - start < 3 and count(tmp_path, "started-") == 0


def test_a_task_failing_once_is_retried(local2, tmp_path):
    got = list(local2.runner().map(toy, [Toy(3, 0.0, str(tmp_path), fail="once")], JobContext()))
    assert [(t.i, r) for t, r in got] == [(3, 9)]
    assert count(tmp_path, "failed-3-") == 1 and count(tmp_path, "started-3-") == 2


def test_a_task_failing_twice_names_itself(local2, tmp_path):
    todo = [Toy(0, 0.2, str(tmp_path)), Toy(7, 0.0, str(tmp_path), fail="always")]
    with pytest.raises(cluster.TaskFailed, match=r"block 7 failed twice: ValueError: toy 7 is broken") as err:
        list(local2.runner().map(toy, todo, JobContext(), name=lambda t: f"block {t.i}"))
    assert isinstance(err.value, RuntimeError)
    assert count(tmp_path, "failed-7-") == 2
    assert count(tmp_path, "done-0") == 1  # the task running beside it finished before the error


def test_a_killed_worker_s_task_is_retried(tmp_path):
    def kill_first_runner():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list(tmp_path.glob("started-0-*")):
            time.sleep(0.05)
        pid = int(next(tmp_path.glob("started-0-*")).name.rsplit("-", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killed: list[int] = []
    with cluster.connect("local:2") as cl:
        killer = threading.Thread(target=kill_first_runner, daemon=True)
        killer.start()
        got = list(cl.runner().map(toy, [Toy(0, 1.0, str(tmp_path))], JobContext()))
        killer.join(5)
    assert [(t.i, r) for t, r in got] == [(0, 0)]
    pids = {int(p.name.rsplit("-", 1)[1]) for p in tmp_path.glob("started-0-*")}
    assert len(killed) == 1 and killed[0] in pids and len(pids) == 2  # run again by another process


def test_local_workers_keep_glibc_s_adaptive_malloc(local2):
    """dask's MALLOC_TRIM_THRESHOLD_ default made every block's prediction 2x slower on a worker."""
    def environ():
        import os

        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")

    seen = local2.client.run(environ)
    assert len(seen) == 2 and all(trim is None and threads for trim, threads in seen.values()), seen


def test_a_worker_loads_a_model_once(monkeypatch):
    from napari_dlbio import tasks

    loads = []
    monkeypatch.setattr(tasks, "load_model", lambda name, backend=None: loads.append(name) or object())
    source = ModelSource.pretrained("unet", "whatever")
    first = cluster.worker_model(source)
    assert cluster.worker_model(source) is first and loads == ["whatever"]
    MODELS.clear()


# --- bad clusters ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_that_does_not_answer_fails_fast_naming_it(tiny_model, images, tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=address):
        cluster.connect(address, timeout=1)
    assert time.monotonic() - start < 5

    start = time.monotonic()
    rc = cli.main(["predict", "--model", str(tiny_model), str(images), "--out", str(tmp_path / "o"),
                   "--cluster", address])
    assert rc == 2 and time.monotonic() - start < 10
    assert f"no Dask scheduler answers at {address}" in capsys.readouterr().err


def test_bad_cluster_specs_and_a_missing_scheduler_address(monkeypatch):
    monkeypatch.delenv(cluster.ADDRESS_ENV, raising=False)
    with pytest.raises(ValueError, match="SCHEDULER_ADDRESS"):
        cluster.connect(None)
    for bad in ("local:", "local:x", "images/"):
        with pytest.raises(ValueError, match="local:N"):
            cluster.connect(bad)
    with pytest.raises(ValueError, match="at least one"):
        cluster.connect("local:0")
    with pytest.raises(ValueError, match="tcp://127.0.0.1:port is not a scheduler address"):
        cluster.connect("tcp://127.0.0.1:port")


def test_without_distributed_the_message_says_what_to_install(monkeypatch, tiny_model, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # what `import distributed` meets when missing
    with pytest.raises(ImportError, match=r"pip install 'napari-dlbio\[cluster\]'"):
        cluster.connect("local:2")
    img, _ = samples.nuclei_2d((32, 32), seed=0)
    tifffile.imwrite(tmp_path / "a.tif", img)
    rc = cli.main(["predict", "--model", str(tiny_model), str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"),
                   "--cluster", "local:2"])
    assert rc == 2 and "pip install 'napari-dlbio[cluster]'" in capsys.readouterr().err


# --- the command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny U-Net saved in a folder (not the per-test store), trained on synthetic nuclei."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for k in range(3):
        img, lab = samples.nuclei_2d((64, 64), seed=k, radius=(4, 7))
        tifffile.imwrite(root / "images" / f"c{k}.tif", img)
        tifffile.imwrite(root / "labels" / f"c{k}.tif", lab)
    model = root / "model"
    rc = cli.main(["train", "--images", str(root / "images"), "--labels", str(root / "labels"),
                   "--out", str(model), *TINY])
    assert rc == 0
    return model


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(4):
        img, _ = samples.nuclei_2d((64, 80), seed=10 + k, radius=(4, 7))
        tifffile.imwrite(folder / f"cells_{k}.tif", img)
    return folder


def _predict(model, images, out, *extra) -> int:
    return cli.main(["predict", "--model", str(model), str(images), "--out", str(out), "--min-size", "0",
                     "--probabilities", "-q", *extra])


def _assert_same_outputs(ref: Path, other: Path) -> None:
    names = sorted(p.name for p in ref.iterdir())
    assert names == sorted(p.name for p in other.iterdir()) and len(names) == 8
    for name in names:
        a, b = tifffile.imread(ref / name), tifffile.imread(other / name)
        assert a.dtype == b.dtype and a.shape == b.shape
        if "probability" in name:
            # The same network on the same CPU; only the thread count may differ (summation order).
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)
    assert max(tifffile.imread(ref / f"cells_{k}.tif").max() for k in range(4)) >= 3  # real labels


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process's group (the worker a nanny started too), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def dask_cli_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker --nthreads 1`` processes on 127.0.0.1; its address."""
    tmp_path = tmp_path_factory.mktemp("dask")
    dask = str(Path(sys.executable).parent / "dask")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "dask.log", "w")  # noqa: SIM115 - closed in the finalizer
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> None:
        procs.append(subprocess.Popen([dask, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(sched_file))
        deadline = time.monotonic() + 30
        while not sched_file.exists() and time.monotonic() < deadline:
            assert procs[0].poll() is None, (tmp_path / "dask.log").read_text()
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            start("worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1")
        with cluster.connect(address) as cl:
            cl.client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()


@pytest.mark.slow  # ~15 s: three dask processes start, two workers import torch
def test_predict_on_the_dask_command_line_tools(tiny_model, images, dask_cli_cluster, tmp_path):
    assert dask_cli_cluster.startswith("tcp://127.0.0.1:")
    assert _predict(tiny_model, images, tmp_path / "here") == 0
    assert _predict(tiny_model, images, tmp_path / "there", "--cluster", dask_cli_cluster) == 0
    _assert_same_outputs(tmp_path / "here", tmp_path / "there")
    def n_models() -> int:  # pickled by value: runs on each worker, reads the worker's cache
        from napari_dlbio.requests import MODELS

        return len(MODELS)

    with cluster.connect(dask_cli_cluster) as cl:  # the scheduler outlives our client: not ours to stop
        assert cl.n_workers() == 2
        loaded = cl.client.run(n_models)
    assert sorted(loaded.values()) in ([0, 1], [1, 1])  # a model per worker that predicted, loaded once


@pytest.mark.slow  # ~15 s with the module's dask processes
def test_a_large_image_is_cut_into_blocks_for_the_workers(tiny_model, dask_cli_cluster, tmp_path):
    """A plane larger than a block: blocks on the two workers, the same labels as blockwise here."""
    folder = tmp_path / "big"
    folder.mkdir()
    img, _ = samples.nuclei_2d((256, 192), seed=3, radius=(4, 7))
    tifffile.imwrite(folder / "mosaic.tif", img)
    args = ("--out-format", "ome-zarr", "--block-size", "64")
    assert on_cluster.is_large(folder / "mosaic.tif", large_image_options_for(64))
    assert _predict(tiny_model, folder, tmp_path / "here", *args) == 0
    assert _predict(tiny_model, folder, tmp_path / "there", *args, "--cluster", dask_cli_cluster) == 0
    here, there = (zarr.open_array(str(tmp_path / d / "mosaic.ome.zarr" / "labels" / "labels" / "0"), mode="r")[:]
                   for d in ("here", "there"))
    assert here.shape == (256, 192) and here.max() >= 10   # real objects, over several blocks
    assert metrics.match(here, there).ap == 1.0             # the same objects, whatever their ids
    assert not list((tmp_path / "there").glob(".*.partial"))  # nothing half-written left


def large_image_options_for(block: int):
    from napari_dlbio.cli.formats import LargeImageOptions

    return LargeImageOptions(out_format="ome-zarr", block_size=block)


def test_ctrl_c_stops_scheduling_files(tiny_model, images, dask_cli_cluster, tmp_path, monkeypatch, capsys):
    for k in range(4, 8):  # 8 files
        img, _ = samples.nuclei_2d((64, 80), seed=10 + k, radius=(4, 7))
        tifffile.imwrite(images / f"cells_{k}.tif", img)
    from napari_dlbio.cli import progress

    class InterruptAfterFirstFile(progress.ProgressBar):
        def __call__(self, p):
            if p.message.startswith("1/"):
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does: the CLI cancels the job
            super().__call__(p)

    monkeypatch.setattr("napari_dlbio.cli.on_cluster.ProgressBar", InterruptAfterFirstFile)
    out = tmp_path / "out"
    rc = cli.main(["predict", "--model", str(tiny_model), str(images), "--out", str(out), "--min-size", "0",
                   "--cluster", dask_cli_cluster])
    err = capsys.readouterr().err
    assert rc == 130, err
    written = sorted(p.name for p in out.iterdir())
    # The file done and the one running beside it; no half-written file, nothing more started.
    assert len(written) == 2 and all(not n.startswith(".") for n in written)
    assert f"cancelled; {len(written)} file(s) written" in err
