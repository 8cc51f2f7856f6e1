"""dask.distributed as the engine: many files or many blocks on many worker processes or machines.

:func:`connect` gives a cluster from ``local:N`` (a ``LocalCluster`` of N worker
processes started here) or a scheduler's address (``tcp://HOST:PORT``, or the
``SCHEDULER_ADDRESS`` environment variable: a cluster started elsewhere, e.g. by
dask-jobqueue on SLURM/PBS). :class:`DaskRunner` runs ``fn(task)`` for many tasks
on it with the same ``map`` as the in-process runner, so the engine that makes the
tasks (files, blocks) does not know where they run.

``distributed`` is imported only when a cluster is asked for: it is an optional
extra (``pip install 'napari-dlbio[cluster]'``), and importing it costs a second.
Tasks carry plain data (paths, a :class:`~napari_dlbio.requests.ModelSource`);
each worker process loads a model once (:func:`worker_model`).
"""

from __future__ import annotations

import os
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from .jobs import Cancelled, JobContext

INSTALL_HINT = "pip install 'napari-dlbio[cluster]'"
ADDRESS_ENV = "SCHEDULER_ADDRESS"
CONNECT_TIMEOUT = 5.0   # s: an address that does not answer fails well within 10 s
_LOCAL = re.compile(r"local:(\d+)$")


class Runner(Protocol):
    """Runs ``fn(task)`` for every task; the shared contract of issue 10.

    Defined here until ``blockwise.py`` (which owns it, with its ``SerialRunner``)
    lands; then this copy goes and cluster.py imports that one.
    """

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], ctx: JobContext,
            name: Callable[[Any], str] = str) -> Iterator[tuple[Any, Any]]: ...


class TaskFailed(RuntimeError):
    """A task failed on its retry too (or its worker kept dying); the message names the task."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(f"running on a Dask cluster needs dask.distributed: {INSTALL_HINT}") from None
    return distributed


# --- connecting ----------------------------------------------------------------------------------
class Cluster:
    """A client of a Dask cluster; closes on exit only what :func:`connect` started."""

    def __init__(self, client, address: str, local=None) -> None:
        self.client = client
        self.address = address
        self._local = local          # the LocalCluster started for this run, else None

    @property
    def started_here(self) -> bool:
        return self._local is not None

    def n_workers(self) -> int:
        return len(self.client.nthreads())

    def describe(self) -> str:
        where = "a local cluster" if self.started_here else "the scheduler"
        return f"{where} at {self.address} ({self.n_workers()} worker(s))"

    def runner(self) -> DaskRunner:
        return DaskRunner(self.client)

    def close(self) -> None:
        # The client first, so its futures are released before a local cluster shuts down.
        # A scheduler started elsewhere is never shut down: it is someone else's.
        try:
            self.client.close()
        finally:
            if self._local is not None:
                self._local.close()
                self._local = None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(spec: str | None = None, timeout: float = CONNECT_TIMEOUT) -> Cluster:
    """A cluster from ``local:N``, a scheduler address, or (``spec`` None/empty) ``$SCHEDULER_ADDRESS``.

    ValueError for a spec that is neither, ImportError (with the install line)
    without dask.distributed, ConnectionError naming the address when no scheduler
    answers there within ``timeout`` seconds.
    """
    spec = (spec or os.environ.get(ADDRESS_ENV, "")).strip()
    if not spec:
        raise ValueError(f"no cluster given: use local:N, tcp://HOST:PORT, or set {ADDRESS_ENV}")
    local = _LOCAL.match(spec)
    if local is None and (spec.startswith("local") or ":" not in spec):
        raise ValueError(f"a cluster is local:N (N worker processes here) or a scheduler's address "
                         f"like tcp://HOST:PORT, not {spec!r}")
    _distributed()
    if local is not None:
        return _start_local(int(local.group(1)))
    address = spec if "://" in spec else f"tcp://{spec}"
    return Cluster(_client(address, timeout), address)


def _client(address: str, timeout: float):
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"no Dask scheduler answers at {address} (waited {timeout:g} s): {exc}") from None
    except ValueError as exc:  # distributed's parser on e.g. a port that is no number
        raise ValueError(f"{address} is not a scheduler address like tcp://HOST:PORT ({exc})") from None


def _start_local(n: int) -> Cluster:
    """``n`` worker processes of one thread each on 127.0.0.1, no dashboard."""
    import dask
    from distributed import Client, LocalCluster

    if n < 1:
        raise ValueError("local:N needs at least one worker (N >= 1)")
    # dask gives every worker process OMP_NUM_THREADS=1 (good for numpy-per-thread workloads);
    # a worker here runs one network at a time, so it gets its share of the cores instead.
    # Set before spawning, as distributed does; the value also lands in this process's environment.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    # dask also sets MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive mmap
    # threshold: every large temporary (network activations, probability maps) is then a
    # fresh mmap, faulted in and zeroed again; a U-Net block ran 2.1x slower for it here.
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        # No dashboard; the scheduler's small HTTP server (health checks) on a free port, not on
        # dask's 8787, which another cluster on this machine may hold.
        local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None, scheduler_port=0,
                             scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    try:
        client = Client(local, set_as_default=False)
        client.wait_for_workers(n, timeout=120)
    except BaseException:
        local.close()
        raise
    return Cluster(client, local.scheduler_address, local)


# --- the model on a worker -----------------------------------------------------------------------
_MODEL_LOCK = threading.Lock()


def worker_model(source):
    """``source``'s model, loaded once per process (a worker's tasks share it).

    Uses :data:`requests.MODELS`, the cache of the docks' job process; the lock
    keeps two threads of one worker from loading the same model twice.
    """
    from .modelcache import MODELS

    with _MODEL_LOCK:
        model = MODELS.get(source.key)
        if model is None:
            model = source.load()
            MODELS.put(source.key, model)
        return model


# --- running tasks -------------------------------------------------------------------------------
class DaskRunner:
    """:class:`Runner` on a dask.distributed client: each task a future, retried once by the scheduler.

    At most as many tasks are submitted as the workers have threads (more as
    workers join): a task submitted is a task running, so cancelling stops
    scheduling at once and waits only for what runs. Submitting all at once and
    cancelling the futures would not stop a task a worker has started; its writes
    could then land after the caller thinks the run is over.
    """

    POLL_S = 0.2   # how often a wait for the next completion looks at the cancel request

    def __init__(self, client) -> None:
        self.client = client

    def _slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], ctx: JobContext,
            name: Callable[[Any], str] = str) -> Iterator[tuple[Any, Any]]:
        """Yield ``(task, fn(task))`` as tasks complete; see :class:`Runner`.

        On cancel (``ctx``) or a task failing twice, nothing more is submitted; the
        running tasks still complete and are yielded, then Cancelled / TaskFailed
        is raised. Anything else (a second Ctrl-C, the caller closing the generator)
        cancels the futures without waiting.
        """
        todo = list(reversed(tasks))
        running: dict[Any, Any] = {}
        ready: queue.Queue = queue.Queue()   # futures as they finish (done callbacks)
        stop: BaseException | None = None
        tag = f"{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex[:8]}"
        try:
            ctx.check()
            self._fill(fn, todo, running, ready, tag)
            while running:
                fut = self._next(ready, ctx if stop is None else None)
                task = running.pop(fut, None)
                if task is not None:  # else: cancel asked while waiting, or a future dropped since
                    try:
                        yield task, self._result(fut, task, name)
                    except TaskFailed as exc:
                        stop = self._halt(stop or exc, running)
                if stop is None and ctx.cancelled:
                    stop = self._halt(Cancelled("cancelled by the user"), running)
                if stop is None:
                    self._fill(fn, todo, running, ready, tag)
            if stop is not None:
                raise stop
        finally:
            if running:
                self.client.cancel(list(running))

    def _fill(self, fn, todo: list, running: dict, ready: queue.Queue, tag: str) -> None:
        free = self._slots() - len(running)
        while todo and free > 0:
            task = todo.pop()
            fut = self.client.submit(fn, task, key=f"{tag}-{len(todo)}", retries=1, pure=False)
            running[fut] = task
            fut.add_done_callback(ready.put)
            free -= 1

    def _next(self, ready: queue.Queue, ctx: JobContext | None):
        """The next finished future; None as soon as ``ctx`` (when given) is cancelled."""
        while True:
            try:
                return ready.get(timeout=self.POLL_S)
            except queue.Empty:
                if ctx is not None and ctx.cancelled:
                    return None

    def _halt(self, why: BaseException, running: dict) -> BaseException:
        """Schedule nothing more: cancel the futures no worker has started (none, unless workers
        left or none came yet); the running ones are waited for. Returns ``why``.

        A future the scheduler hands to a worker between the two calls below may
        still run; its result is then not reported.
        """
        started = {key for keys in self.client.processing().values() for key in keys}
        unstarted = [f for f in running if f.key not in started and not f.done()]
        for f in unstarted:
            del running[f]
        if unstarted:
            self.client.cancel(unstarted)
        return why

    @staticmethod
    def _result(fut, task, name: Callable[[Any], str]):
        if fut.status == "finished":
            return fut.result()
        if fut.status == "cancelled":
            raise TaskFailed(f"{name(task)} failed: its task was cancelled by the cluster (scheduler lost?)")
        exc = fut.exception()
        if type(exc).__name__ == "KilledWorker":
            raise TaskFailed(f"{name(task)} failed: the workers running it kept dying ({exc})") from exc
        raise TaskFailed(f"{name(task)} failed twice: {type(exc).__name__}: {exc}") from exc
