"""``napari-dlbio predict``: apply a model to image files, one output TIFF per input and output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..execution import Call, InProcessExecutor, JobCallbacks
from ..jobs import JobContext
from .common import EXIT_CANCELLED, CLIError, _log, channels_option
from .images import _expand_inputs, _guess_for_model, _OpenImage, _out_name, _TiffOutputs
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


def cmd_predict(args, backend) -> int:
    """Predict every input with ``--model``; ``backend`` (a BackendSpec) gives the settings options."""
    from .. import tasks

    files, out_dir, settings = _inputs(args, backend)
    model = _load_model(args.model, args.backend)
    job = _Job(model, settings, channels_option(args.channels), args.axes, out_dir, _log(args),
               ProgressBar("predict", enabled=not args.quiet), args.quiet)
    out_dir.mkdir(parents=True, exist_ok=True)
    job.log(f"predicting {len(files)} image(s) with {tasks.model_name(model)} ({model.backend})")
    start = time.monotonic()
    return _finish(job, *_predict_all(job, files), start)


def _inputs(args, backend) -> tuple[list[Path], Path, Any]:
    """The input files, the output folder and the backend's Predict settings, from the options."""
    files = _expand_inputs(args.inputs)
    return files, _out_dir(args.out, files), settings_from_args(args, backend.Predict)


def _finish(job: _Job, written: list[Path], cancelled: bool, start: float) -> int:
    """The command's last line and exit status."""
    if cancelled:
        job.log(f"cancelled; {len(written)} file(s) written to {job.out_dir}")
        return EXIT_CANCELLED
    print(f"wrote {len(written)} file(s) to {job.out_dir} in {time.monotonic() - start:.1f} s")
    return 0


def _out_dir(out: str, files: list[Path]) -> Path:
    """``--out`` as a folder that overwrites none of the inputs."""
    out_dir = Path(out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} is a file, not a folder")
    for f in files:
        if (out_dir / _out_name(f)).resolve() == f.resolve():
            raise CLIError(f"--out would overwrite the input {f}; choose another folder")
    return out_dir


def _load_model(name: str, backend: str | None):
    from .. import tasks

    try:
        return tasks.load_model(name, backend)
    except (ImportError, RuntimeError) as exc:
        raise CLIError(f"cannot load model {name!r}: {exc}") from None


def _predict_all(job: _Job, files: list[Path]) -> tuple[list[Path], bool]:
    """The files written, and whether Ctrl-C cancelled (the cancelled file leaves nothing).

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
    """Predict one file and write its outputs; None when cancelled."""
    from ..axes import ItemPlan

    with _OpenImage(f) as img:
        axes = _axes_of(job, f, img)
        plan = ItemPlan(axes, tuple(img.array.shape), job.model.item_ndim(job.settings), job.channels)
        outputs = _TiffOutputs(job.out_dir, f, plan)
        pred = _run_model(job, f, img, axes, ctx, outputs)
        if pred.cancelled:
            outputs.discard()
            return None
        written = _write(pred, outputs)
        _report_file(job, f, pred)
        return written


def _axes_of(job: _Job, f: Path, img: _OpenImage) -> str:
    """--axes, else the file's own, else a guess that suits the model; checked against the shape."""
    from ..axes import validate_axes

    shape = tuple(img.array.shape)
    axes = job.axes or img.axes or _guess_for_model(shape, img.rgb, job.model, job.channels)
    try:
        return validate_axes(axes, shape)
    except ValueError as exc:
        raise CLIError(f"{f.name}: {exc}") from None


def _run_model(job: _Job, f: Path, img: _OpenImage, axes: str, ctx: JobContext, outputs: _TiffOutputs):
    """``tasks.predict`` into ``outputs``; on any error the partial files are removed."""
    from .. import tasks

    try:
        return tasks.predict(job.model, img.array, axes, job.settings, ctx, rgb=img.rgb,
                             channels=job.channels, out=outputs)
    except ValueError as exc:
        outputs.discard()
        raise CLIError(f"{f.name}: {exc}") from None
    except BaseException:
        outputs.discard()
        raise


def _write(pred, outputs: _TiffOutputs) -> list[Path]:
    """Add the vector outputs (polygons) and give the files their real names."""
    from .. import tasks

    if tasks.SHAPES in pred.outputs:
        outputs.add_shapes(pred.outputs[tasks.SHAPES], pred.axes[tasks.SHAPES])
    return outputs.commit()


def _report_file(job: _Job, f: Path, pred) -> None:
    import numpy as np

    labels = pred.outputs.get("labels")
    if labels is None or job.quiet:
        return
    job.bar.close()
    # Reading back a huge output only to count objects is not worth it.
    n = f"{int(np.max(labels))} object(s)" if 0 < np.size(labels) <= 2**27 else "done"
    job.log(f"{f.name}: {n} -> {job.out_dir / _out_name(f)}")
