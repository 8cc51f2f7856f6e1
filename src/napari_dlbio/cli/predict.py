"""``napari-dlbio predict``: apply a model to images, one output (TIFF files or a zarr store) per input."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..execution import Call, InProcessExecutor, JobCallbacks
from ..jobs import JobContext
from .common import EXIT_CANCELLED, CLIError, _log, channels_option
from .formats import (
    LargeImageOptions,
    check_out_dir,
    choose_format,
    disk_full,
    keep_partial,
    large_image_options,
)
from .images import _expand_inputs, _guess_for_model, _OpenImage
from .options import settings_from_args
from .progress import ProgressBar, _CancelOnInterrupt


@dataclass
class _Job:
    """What every input of one ``predict`` command is predicted with."""

    model: Any
    settings: Any
    channels: tuple[int, ...] | None
    axes: str | None  # --axes; None: from each file, or guessed
    out_dir: Path
    log: Any
    bar: ProgressBar
    quiet: bool
    large: LargeImageOptions
    runner: Any = None             # blocks of large images on a Dask cluster (--cluster)
    source: Any = None             # the model as the cluster's workers load it (a ModelSource)
    objects: bool = False          # --objects: a <stem>_objects.csv per output


def cmd_predict(args, backend) -> int:
    """Predict every input with ``--model``; ``backend`` (a BackendSpec) gives the settings options."""
    from .. import tasks

    files, out_dir, settings, large = _inputs(args, backend)
    model = _load_model(args.model, args.backend)
    job = _Job(model, settings, channels_option(args.channels), args.axes, out_dir, _log(args),
               ProgressBar("predict", enabled=not args.quiet), args.quiet, large,
               objects=args.objects)
    job.log(f"predicting {len(files)} image(s) with {tasks.model_name(model)} ({model.backend})")
    start = time.monotonic()
    return _finish(job, *_predict_all(job, files), start)


def _inputs(args, backend) -> tuple[list[Path], Path, Any, Any]:
    """The input files, the output folder, the backend's Predict settings and the large-image options."""
    files = _expand_inputs(args.inputs)
    large = large_image_options(args)
    out_dir = check_out_dir(Path(args.out).expanduser(), files, large.out_format)
    return files, out_dir, settings_from_args(args, backend.Predict), large


def _finish(job: _Job, written: list[Path], cancelled: bool, start: float) -> int:
    """The command's last line and exit status."""
    if cancelled:
        job.log(f"cancelled; {len(written)} file(s) written to {job.out_dir}")
        return EXIT_CANCELLED
    print(f"wrote {len(written)} file(s) to {job.out_dir} in {time.monotonic() - start:.1f} s")
    return 0


def _load_model(name: str, backend: str | None):
    from .. import tasks

    try:
        return tasks.load_model(name, backend)
    except (ImportError, RuntimeError) as exc:
        raise CLIError(f"cannot load model {name!r}: {exc}") from None


def _predict_all(job: _Job, files: list[Path]) -> tuple[list[Path], bool]:
    """The files written, and whether Ctrl-C cancelled (the cancelled input leaves nothing
    but, for zarr outputs, its hidden working store, which ``--resume`` continues).

    In this process (the command line has no UI to protect), through the same
    executor interface as the docks' job process.
    """
    executor = InProcessExecutor()
    try:
        with _CancelOnInterrupt(lambda: executor.context):
            return executor.run(Call(_predict_files, (job, files)), JobCallbacks(progress=job.bar))
    finally:
        job.bar.close()


def _predict_files(job: _Job, files: list[Path], ctx: JobContext) -> tuple[list[Path], bool]:
    written: list[Path] = []
    for k, f in enumerate(files):
        done = _predict_file(job, f, ctx.span(k, k + 1, len(files)))
        if done is None:
            return written, True
        written += done
    return written, False


def _predict_file(job: _Job, f: Path, ctx: JobContext) -> list[Path] | None:
    """Predict one input and write its outputs; None when cancelled."""
    from ..axes import ItemPlan
    from ..ngff import is_finished, output_path

    with _OpenImage(f) as img:
        if img.note:
            job.log(img.note)
        axes = _axes_of(job, f, img)
        plan = ItemPlan(axes, tuple(img.array.shape), job.model.item_ndim(job.settings), job.channels)
        fmt = choose_format(job.large, job.model, img, plan)
        final = output_path(job.out_dir, f, fmt)
        if job.large.resume and is_finished(final):
            job.log(f"{f.name}: finished by an earlier run ({final}); skipped")
            return [final]
        outputs = _make_outputs(job, f, final, fmt, img, axes, plan)
        pred = _run_model(job, f, img, axes, ctx, outputs)
        if pred.cancelled:
            keep_partial(job, f, outputs)
            return None
        count = _count_objects(job, pred)  # before finalize renames the arrays' store
        written = _write(job, f, pred, outputs)
        if count is not None:
            job.bar.close()
            job.log(f"{f.name}: {count} -> {written[0]}")
        return written


def _make_outputs(job: _Job, f: Path, final: Path, fmt: str, img, axes: str, plan):
    from .formats import make_outputs

    try:
        return make_outputs(job.large, final, fmt, img, axes, plan)
    except ValueError as exc:
        raise CLIError(f"{f.name}: {exc}") from None


def _axes_of(job: _Job, f: Path, img) -> str:
    """--axes, else the file's own, else a guess that suits the model; checked against the shape."""
    from ..axes import validate_axes

    shape = tuple(img.array.shape)
    axes = job.axes or img.axes or _guess_for_model(shape, img.rgb, job.model, job.channels)
    try:
        return validate_axes(axes, shape)
    except ValueError as exc:
        raise CLIError(f"{f.name}: {exc}") from None


def _run_model(job: _Job, f: Path, img, axes: str, ctx: JobContext, outputs):
    """``tasks.predict`` into ``outputs``. On an error a resumable output (zarr) stays for
    ``--resume`` (bad input excepted: nothing of it is worth keeping), others are removed."""
    from .. import tasks
    from ..ngff import is_disk_full

    engine = job.large.engine_kwargs()
    if job.runner is not None:
        # The workers reopen the image by its path and load the model once each.
        engine.update(runner=job.runner, model_source=job.source, image_source=img.source)
    try:
        return tasks.predict(job.model, img.array, axes, job.settings, ctx, rgb=img.rgb,
                             channels=job.channels, out=outputs, **engine)
    except ValueError as exc:
        outputs.discard()
        raise CLIError(f"{f.name}: {exc}") from None
    except BaseException as exc:
        if is_disk_full(exc):
            raise disk_full(f, outputs, job.out_dir) from None
        keep_partial(job, f, outputs)
        raise


def _write(job: _Job, f: Path, pred, outputs) -> list[Path]:
    """Add the vector outputs (polygons), finish the outputs and give them their real names."""
    from .. import tasks
    from ..ngff import is_disk_full

    try:
        if tasks.SHAPES in pred.outputs:
            outputs.add_shapes(pred.outputs[tasks.SHAPES], pred.axes[tasks.SHAPES])
        written = outputs.finalize(attrs={"model": pred.model})
    except BaseException as exc:
        if is_disk_full(exc):
            raise disk_full(f, outputs, job.out_dir) from None
        keep_partial(job, f, outputs)
        raise
    return written + _write_objects(job, f, pred, outputs)


def _write_objects(job: _Job, f: Path, pred, outputs) -> list[Path]:
    """``<stem>_objects.csv`` (--objects) beside the output, once the output is finished."""
    from ..objects import write_csv

    if not job.objects:
        return []
    if pred.objects is None:
        why = ("the model gives no per-object scores" if job.model.output != "labels" or job.model.semantic
               else "per-object scores are not computed for images predicted block by block")
        print(f"{f.name}: no objects table: {why}", file=sys.stderr, flush=True)
        return []
    return [write_csv(pred.objects, outputs.extra_path("objects", ".csv"))]


def _count_objects(job: _Job, pred) -> str | None:
    """``"N object(s)"`` (ids are consecutive), read chunk-wise from zarr outputs."""
    import numpy as np

    labels = pred.outputs.get("labels")
    if labels is None or job.quiet:
        return None
    # Reading back a huge output only to count objects is not worth it.
    if not 0 < np.size(labels) <= 2**27:
        return "done"
    if isinstance(labels, np.ndarray):
        return f"{int(np.max(labels))} object(s)"
    import dask.array as da

    return f"{int(da.from_array(labels, chunks=labels.chunks).max().compute())} object(s)"
