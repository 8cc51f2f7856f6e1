"""``napari-dlbio predict --cluster``: one task per input file, run by dask.distributed workers.

A worker reopens its file by path, predicts it with the model it loaded once
(:func:`~napari_dlbio.cluster.worker_model`) and writes the outputs itself, through
the same ``_predict_file`` as the in-process run, so the files are identical.
This process loads no model: it only names it (a ModelSource) and collects what
the workers report.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..execution import Call, InProcessExecutor, JobCallbacks
from ..jobs import Cancelled, JobContext
from ..requests import ModelSource
from .common import CLIError, _log, channels_option
from .formats import LargeImageOptions
from .predict import _finish, _inputs, _Job, _predict_file
from .progress import ProgressBar, _CancelOnInterrupt


@dataclass(frozen=True)
class FileTask:
    """One input file as plain data, for a worker (maybe on another machine: paths are absolute)."""

    path: str
    out_dir: str
    source: ModelSource
    settings: Any                  # the backend's Predict settings (device "auto": the worker's GPU)
    channels: tuple[int, ...] | None
    axes: str | None
    large: LargeImageOptions       # --out-format and the block options


def task_name(task: FileTask) -> str:
    return Path(task.path).name


def predict_file(task: FileTask) -> tuple[list[str], list[str]]:
    """On a worker: predict one file and write its outputs; the paths written and the lines to log."""
    from ..cluster import worker_model

    lines: list[str] = []
    job = _Job(worker_model(task.source), task.settings, task.channels, task.axes, Path(task.out_dir),
               lines.append, ProgressBar(enabled=False), False, task.large)
    written = _predict_file(job, Path(task.path), JobContext())  # never cancelled: it runs to its end
    return [str(p) for p in written or ()], lines


def cmd_predict_on_cluster(args, backend) -> int:
    """``cmd_predict`` with ``--cluster``: the files predicted by the cluster's workers."""
    from ..cluster import ADDRESS_ENV, connect
    from ..store import ModelError

    files, out_dir, settings, large = _inputs(args, backend)
    try:
        source = ModelSource.named(args.model, args.backend)
    except ModelError as exc:
        raise CLIError(f"cannot load model {args.model!r}: {exc}") from None
    job = _Job(None, settings, channels_option(args.channels), args.axes, out_dir, _log(args),
               ProgressBar("predict", enabled=not args.quiet), args.quiet, large)
    todo = [FileTask(str(f.resolve()), str(out_dir.resolve()), source, settings, job.channels, job.axes, large)
            for f in files]
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.objects:
        print("--objects: not supported with --cluster yet; no objects tables are written",
              file=sys.stderr, flush=True)
    spec = args.cluster or f"${ADDRESS_ENV}"
    job.log(f"starting a local cluster ({spec})..." if spec.startswith("local:")
            else f"connecting to {spec}...")
    with connect(args.cluster) as cluster:
        job.log(f"predicting {len(files)} image(s) with {source.name} ({source.backend}) on {cluster.describe()}")
        start = time.monotonic()
        return _finish(job, *_run(job, cluster.runner(), todo), start)


def is_large(path: str | Path, large: LargeImageOptions) -> bool:
    """Whether an input's planes exceed a block: it is then cut into blocks for the workers.

    Smaller inputs go to the workers whole, one task per file. Only the shape is read.
    """
    from .images import _OpenImage

    edge = large.block_size or LARGE_EDGE
    with _OpenImage(Path(path)) as img:
        shape = tuple(img.array.shape)
    planes = [n for n in shape[-3:] if n > 4] if img.rgb else list(shape[-2:])
    return len(planes) >= 2 and planes[-1] * planes[-2] > edge * edge


LARGE_EDGE = 4096   # pixels: a plane above 4096 x 4096 is predicted block by block on the workers


def _run(job: _Job, runner, todo: list[FileTask]) -> tuple[list[Path], bool]:
    """As ``predict._predict_all``: Ctrl-C cancels (running files finish), progress per file."""
    executor = InProcessExecutor()
    try:
        with _CancelOnInterrupt(lambda: executor.context):
            return executor.run(Call(_collect, (job, runner, todo)), JobCallbacks(progress=job.bar))
    finally:
        job.bar.close()


def _collect(job: _Job, runner, todo: list[FileTask], ctx: JobContext) -> tuple[list[Path], bool]:
    big = [t for t in todo if is_large(t.path, t.large)]
    written, cancelled = _collect_large(job, runner, big, ctx.span(0, len(big), len(todo)))
    if cancelled:
        return written, True
    small = [t for t in todo if t not in big]
    done, cancelled = _collect_files(job, runner, small, ctx.span(len(big), len(todo), len(todo)))
    return written + done, cancelled


def _collect_large(job: _Job, runner, big: list[FileTask], ctx: JobContext) -> tuple[list[Path], bool]:
    """Large inputs one after the other here, their blocks on the workers (the model loaded here
    too: the block plan asks it for its halo)."""
    written: list[Path] = []
    if not big:
        return written, False
    local = replace(job, model=big[0].source.load(), runner=runner, source=big[0].source)
    for k, task in enumerate(big):
        done = _predict_file(local, Path(task.path), ctx.span(k, k + 1, len(big)))
        if done is None:
            return written, True
        written += done
    return written, False


def _collect_files(job: _Job, runner, todo: list[FileTask], ctx: JobContext) -> tuple[list[Path], bool]:
    """Each input whole on a worker, as they come."""
    from ..cluster import TaskFailed

    written: list[Path] = []
    n = len(todo)
    if not n:
        return written, False
    ctx.report(0, n, f"0/{n} files")
    try:
        for k, (task, (paths, lines)) in enumerate(runner.map(predict_file, todo, ctx, task_name), 1):
            written += map(Path, paths)
            if not job.quiet:
                job.bar.close()
                for line in lines:
                    job.log(line)
            ctx.report(k, n, f"{k}/{n} files ({task_name(task)})")
    except Cancelled:
        return written, True
    except TaskFailed as exc:
        raise CLIError(str(exc)) from None
    return written, False
