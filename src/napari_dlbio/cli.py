"""The ``napari-dlbio`` command: train, predict, list models, run a demo.

The CLI is a thin shell around :mod:`napari_dlbio.tasks`, the same job runner the
GUI uses. Each backend's options are generated from its pydantic settings (see
:mod:`napari_dlbio.settings_fields`), so ``napari-dlbio train --backend unet
--help`` always lists what that backend really accepts. Errors the user can fix
print one line and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, store
from .jobs import Cancelled, JobContext, Progress

PROG = "napari-dlbio"
EXIT_USAGE = 2
EXIT_CANCELLED = 130
OWN_PREFIX = "s__"  # argparse dest prefix of options generated from a settings model


class CLIError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


# --- progress -----------------------------------------------------------------------
class ProgressBar:
    """A one-line text progress bar on stderr, redrawn in place.

    Keeps the latest epoch and losses reported by the training loop so the line
    shows them even between epoch reports. When stderr is not a terminal (logs,
    CI) it prints a plain line per 10 % step instead of carriage returns.
    """

    def __init__(self, title: str = "", stream=None, enabled: bool = True, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.title = title
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.metrics: dict[str, float] = {}
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False
        self.message = ""

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        self.metrics.update(p.metrics)
        # The loop's end-of-epoch report repeats the losses in its message; the
        # step reports ("epoch 3, step 120") say where training is.
        self.message = f"epoch {int(p.metrics['epoch'])} done" if "epoch" in p.metrics else p.message
        frac = p.fraction
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.1 and not (frac is not None and frac >= 1):
                return
            self._last_draw = now
            self.stream.write("\r" + self.line(frac, self.message) + "\x1b[K")
            self._drawn = True
        else:
            decile = -1 if frac is None else int(frac * 10)
            if decile <= self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(self.line(frac, self.message) + "\n")
        self.stream.flush()

    def line(self, frac: float | None, message: str) -> str:
        elapsed = time.monotonic() - self.start
        if frac is None:
            bar, pct, eta = "-" * self.width, "  ?%", ""
        else:
            n = int(round(frac * self.width))
            bar = "#" * n + "-" * (self.width - n)
            pct = f"{frac * 100:3.0f}%"
            eta = f" < {_clock(elapsed / frac - elapsed)}" if 0.01 < frac < 1 else ""
        parts = [self.title, f"{pct} [{bar}]", _clock(elapsed) + eta, message]
        m = self.metrics
        if "loss" in m:
            parts.append(f"loss {m['loss']:.4f}")
        if "val_loss" in m:
            parts.append(f"val {m['val_loss']:.4f}")
        return " ".join(p for p in parts if p)

    def close(self) -> None:
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _CancelOnInterrupt:
    """First Ctrl-C asks the job to stop (best model kept); a second one aborts."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._old = None

    def __enter__(self) -> _CancelOnInterrupt:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.ctx.cancelled:
            raise KeyboardInterrupt
        self.ctx.cancel()
        sys.stderr.write("\ncancelling after the current step (Ctrl-C again to abort)...\n")
        sys.stderr.flush()

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# --- settings options ------------------------------------------------------------------
def _add_settings_options(parser: argparse.ArgumentParser, model_cls, title: str, taken: set[str]) -> None:
    """One option per settings field; values stay strings and are parsed/validated later."""
    from .settings_fields import fields

    basic = parser.add_argument_group(f"{title} settings")
    advanced = parser.add_argument_group(f"{title} advanced settings")
    for spec in fields(model_cls):
        if spec.option in taken:
            continue
        group = advanced if spec.advanced else basic
        kw: dict[str, Any] = {
            "dest": OWN_PREFIX + spec.dest,
            "default": argparse.SUPPRESS,
            "help": spec.help(),
        }
        if spec.type is bool and spec.sequence is None:
            group.add_argument(spec.option, action=argparse.BooleanOptionalAction, **kw)
            continue
        if spec.choices is not None:
            kw["metavar"] = "{" + ",".join(map(str, spec.choices)) + "}"
        else:
            kw["metavar"] = spec.type.__name__.upper() if spec.sequence is None else "N,N"
        group.add_argument(spec.option, **kw)


def _settings_from_args(args: argparse.Namespace, model_cls, base=None):
    from .settings_fields import build, fields

    specs = {s.dest: s for s in fields(model_cls)}
    values = {}
    for key, raw in vars(args).items():
        if not key.startswith(OWN_PREFIX):
            continue
        spec = specs[key[len(OWN_PREFIX) :]]
        values[spec.name] = raw if isinstance(raw, bool) else spec.parse(raw)
    return build(model_cls, values, base)


# --- parser -----------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def build_parser(train_backend=None, predict_backend=None) -> argparse.ArgumentParser:
    from .backends import BACKENDS

    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deep learning for microscopy: train and apply segmentation and denoising models.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # train
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a model on image/label folders",
        description="Train a model. Images and labels are matched by file name; only images whose "
        "labels contain at least one object are used. Ctrl-C stops and keeps the best model.",
        epilog=f"backends: {', '.join(BACKENDS)}. '{PROG} train --backend NAME --help' lists its settings.",
    )
    t.add_argument("--backend", default="unet", choices=list(BACKENDS), help="model family (default: unet)")
    t.add_argument(
        "--images", required=True, nargs="+", metavar="PATH", help="folder(s) or file(s) of training images"
    )
    t.add_argument(
        "--labels", metavar="DIR", help="folder of label images with the same file names (not needed for n2v)"
    )
    t.add_argument(
        "--out",
        required=True,
        metavar="MODEL",
        help="model name in the store, or a folder path (contains '/')",
    )
    t.add_argument(
        "--from",
        dest="start_from",
        metavar="MODEL",
        help="fine-tune this model (store name, folder, or a pretrained name of the backend)",
    )
    t.add_argument("--axes", help="axes of the images, e.g. YX, ZYX, CYX, YXC (default: guessed)")
    t.add_argument("--ndim", type=int, choices=(2, 3), default=2, help="2D or 3D model (default: 2)")
    t.add_argument("--channels", metavar="I,J", help="input channels to use (default: all)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model of that name")
    taken = {a for act in t._actions for a in act.option_strings}
    if train_backend is not None:
        _add_settings_options(t, train_backend.Settings, train_backend.name, taken)

    # predict
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="apply a model to TIFF files or folders",
        description="Apply a model to images; writes one TIFF per input, with the same file name, "
        "into --out.",
        epilog="Options of the model's backend are listed when --model (or --backend) is given "
        "before --help.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="store name or model folder; with --backend cellpose|stardist also a pretrained name/path",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--backend", choices=list(BACKENDS), help="backend of a pretrained model")
    p.add_argument(
        "--axes", help="axes of the inputs, e.g. YX, ZYX, TYX, CYX (default: from file or guessed)"
    )
    p.add_argument("--channels", metavar="I,J", help="input channels to use (default: all)")
    taken = {a for act in p._actions for a in act.option_strings}
    if predict_backend is not None:
        _add_settings_options(p, predict_backend.Predict, predict_backend.name, taken)

    # models
    m = sub.add_parser(
        "models",
        parents=[common],
        help="list the models in the store",
        description=f"List the models in {store.store_root()}.",
    )
    m.add_argument("--json", action="store_true", help="machine-readable output")

    # demo
    d = sub.add_parser(
        "demo",
        parents=[common],
        help="train a small U-Net on synthetic nuclei and score it",
        description="Generate synthetic nuclei, train a small U-Net for about a minute (CPU is enough), "
        "segment a separate test image and print its AP@0.5.",
    )
    d.add_argument(
        "--out", default="demo-output", metavar="DIR", help="output folder (default: ./demo-output)"
    )
    d.add_argument("--minutes", type=float, default=1.0, help="training time budget (default: 1)")
    d.add_argument("--gui", action="store_true", help="open napari with the results and the plugin's docks")
    return parser


def _peek(argv: Sequence[str], *options: str) -> dict[str, str | None]:
    """Values of a few options before the full parse (to pick the backend's options)."""
    pre = argparse.ArgumentParser(add_help=False)
    for o in options:
        pre.add_argument(o)
    known, _ = pre.parse_known_args(list(argv))
    return vars(known)


def _backends_for(argv: Sequence[str]):
    """The backends whose options the parser must offer, from argv (no full parse yet)."""
    from . import backends

    cmd = next((a for a in argv if not a.startswith("-")), None)
    if cmd == "train":
        name = _peek(argv, "--backend")["backend"] or "unet"
        if name not in backends.BACKENDS:
            return None, None  # argparse's choices check reports it
        return _get_backend(name), None
    if cmd == "predict":
        given = _peek(argv, "--backend", "--model")
        name = given["backend"]
        if name is None and given["model"]:
            try:
                name = store.read_info(store.resolve(given["model"])).backend
            except store.ModelError:
                if "-h" in argv or "--help" in argv:
                    return None, None
                raise
        if name is None or name not in backends.BACKENDS:
            return None, None
        return None, _get_backend(name)
    return None, None


def _get_backend(name: str):
    from . import backends

    try:
        return backends.get(name)
    except (ImportError, ValueError) as exc:
        raise CLIError(str(exc)) from None


# --- commands ---------------------------------------------------------------------------
def _channels(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(c) for c in text.replace(" ", "").split(",") if c)
    except ValueError:
        raise CLIError(f"--channels takes channel numbers like 0,1 (not {text!r})") from None


def cmd_train(args, backend) -> int:
    from . import data as data_mod
    from . import tasks

    if backend.output == "labels" and not args.labels:
        raise CLIError(f"--labels is required to train a {backend.name} model (it learns from label images)")
    base = None
    if args.start_from:
        try:
            info = store.read_info(store.resolve(args.start_from))
            if info.backend != backend.name:
                raise CLIError(f"--from {args.start_from}: a {info.backend} model, not {backend.name}")
            base = info.settings
        except store.ModelError:
            if backend.name == "unet":
                raise
            # A pretrained name/file of the backend (e.g. cellpose 'cpsam'): its own defaults.
    settings = _settings_from_args(args, backend.Settings, base)
    dest = store.destination(args.out)
    if dest.exists() and not args.overwrite:
        raise CLIError(f"{dest} exists; choose another --out or pass --overwrite")
    channels = _channels(args.channels)
    parts = []
    for path in args.images:
        parts.append(data_mod.from_folders(path, args.labels, args.axes, args.ndim, channels))
    data = data_mod.combine(parts) if len(parts) > 1 else parts[0]
    log = _log(args)
    log(
        f"training a {backend.title} model on {len(data)} item(s) "
        f"({data.ndim}D, {data.n_channels} channel(s)); Ctrl-C stops and keeps the best model"
    )
    bar = ProgressBar("train", enabled=not args.quiet)
    ctx = JobContext(bar)
    try:
        with _CancelOnInterrupt(ctx):
            outcome = tasks.train(backend.name, data, settings, args.out, ctx, start_from=args.start_from)
    except Cancelled as exc:
        bar.close()
        log(str(exc))
        return EXIT_CANCELLED
    finally:
        bar.close()
    fit = outcome.fit
    print(f"model: {outcome.path}")
    print(
        f"training: {fit.epochs} epoch(s) in {fit.seconds:.0f} s, stopped: {fit.stopped}, "
        f"best epoch {fit.best_epoch} (loss {fit.best_loss:.4f})"
    )
    scores = _metrics_text(outcome.metrics)
    if scores:
        print(f"validation: {scores}")
    return 0


def _metrics_text(metrics: dict) -> str:
    names = (("ap50", "AP@0.5"), ("f1", "F1"), ("mean_iou", "mean IoU"), ("psnr", "PSNR"))
    out = []
    for key, label in names:
        v = metrics.get(key)
        if isinstance(v, (int, float)):
            out.append(f"{label} {v:.3f}" if key != "psnr" else f"{label} {v:.2f} dB")
    if out and "n_val" in metrics:
        out.append(f"({metrics['n_val']} validation item(s))")
    return " ".join(out)


def _log(args):
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


def _expand_inputs(inputs: Sequence[str]) -> list[Path]:
    from .data import IMAGE_SUFFIXES, list_images

    files: list[Path] = []
    for s in inputs:
        p = Path(s).expanduser()
        if p.is_dir():
            try:
                files += list_images(p)
            except FileNotFoundError as exc:
                raise CLIError(str(exc)) from None
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise CLIError(f"{p} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
            files.append(p)
        else:
            raise CLIError(f"no such file or folder: {p}")
    names: dict[str, Path] = {}
    for f in files:
        key = _out_name(f)
        if key in names:
            raise CLIError(f"{names[key]} and {f} would both be written as {key}; predict them separately")
        names[key] = f
    return files


def _out_name(path: Path, extra: str = "") -> str:
    suffix = path.suffix if path.suffix.lower() in (".tif", ".tiff") else ".tif"
    return f"{path.stem}{'_' + extra if extra else ''}{suffix}"


class _OpenImage:
    """An input image opened lazily where the format allows; closed on exit.

    Uncompressed TIFFs are memory-mapped, other TIFFs read chunk-wise through
    zarr; items are then read one at a time by the job runner. Axes come from the
    file (ImageJ hyperstacks) when they are unambiguous.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.array: Any = None
        self.axes: str | None = None
        self.rgb = False
        self._tif = None

    def __enter__(self) -> _OpenImage:
        from .data import read_image

        if self.path.suffix.lower() not in (".tif", ".tiff"):
            try:
                self.array = read_image(self.path)
            except Exception as exc:  # noqa: BLE001 - any decoder error means an unreadable file
                raise CLIError(f"cannot read {self.path}: {exc}") from None
            self.rgb = self.array.ndim == 3 and self.array.shape[-1] in (3, 4)
            return self
        import tifffile

        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
        except Exception as exc:  # noqa: BLE001
            raise CLIError(f"cannot read {self.path}: {exc}") from None
        self.axes = _file_axes(series.axes)
        self.rgb = series.axes.endswith("S") and series.shape[-1] in (3, 4)
        try:
            self.array = tifffile.memmap(self.path, mode="r")
        except Exception:  # noqa: BLE001 - compressed/tiled data cannot be mapped
            self.array = self._zarr(series)
        return self

    def _zarr(self, series):
        try:
            import zarr

            return zarr.open(series.aszarr(), mode="r")
        except Exception:  # noqa: BLE001 - no zarr: read it whole
            return series.asarray()

    def __exit__(self, *exc) -> None:
        self.array = None
        if self._tif is not None:
            self._tif.close()


def _file_axes(axes: str) -> str | None:
    # tifffile names unknown dimensions Q, I etc.; trust only T/Z/C/Y/X (S = RGB samples, last).
    axes = axes.upper()
    if axes.endswith("S") and "C" not in axes:
        axes = axes[:-1] + "C"
    if set(axes) <= set("TZCYX") and len(set(axes)) == len(axes):
        return axes
    return None


def cmd_predict(args, backend) -> int:
    import numpy as np

    from . import tasks
    from .axes import ItemPlan, validate_axes

    files = _expand_inputs(args.inputs)
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} is a file, not a folder")
    for f in files:
        if (out_dir / _out_name(f)).resolve() == f.resolve():
            raise CLIError(f"--out would overwrite the input {f}; choose another folder")
    settings = _settings_from_args(args, backend.Predict)
    try:
        model = tasks.load_model(args.model, args.backend)
    except (ImportError, RuntimeError) as exc:
        raise CLIError(f"cannot load model {args.model!r}: {exc}") from None
    channels = _channels(args.channels)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _log(args)
    log(f"predicting {len(files)} image(s) with {tasks.model_name(model)} ({model.backend})")
    bar = ProgressBar("predict", enabled=not args.quiet)
    ctx = JobContext(bar)
    written: list[Path] = []
    cancelled = False
    start = time.monotonic()
    try:
        with _CancelOnInterrupt(ctx):
            for k, f in enumerate(files):
                with _OpenImage(f) as img:
                    shape = tuple(img.array.shape)
                    axes = args.axes or img.axes or _guess_for_model(shape, img.rgb, model, channels)
                    try:
                        axes = validate_axes(axes, shape)
                    except ValueError as exc:
                        raise CLIError(f"{f.name}: {exc}") from None
                    plan = ItemPlan(axes, shape, tasks.item_ndim(model, settings), channels)
                    outputs = _TiffOutputs(out_dir, f, plan)
                    try:
                        pred = tasks.predict(
                            model,
                            img.array,
                            axes,
                            settings,
                            ctx.span(k, k + 1, len(files)),
                            rgb=img.rgb,
                            channels=channels,
                            out=outputs,
                        )
                    except ValueError as exc:
                        outputs.discard()
                        raise CLIError(f"{f.name}: {exc}") from None
                    except BaseException:
                        outputs.discard()
                        raise
                    if pred.cancelled:
                        outputs.discard()
                        cancelled = True
                        break
                    written += outputs.commit()
                    labels = pred.outputs.get("labels")
                    if labels is not None and not args.quiet:
                        bar.close()
                        # Reading back a huge output only to count objects is not worth it.
                        n = f"{int(np.max(labels))} object(s)" if 0 < np.size(labels) <= 2**27 else "done"
                        log(f"{f.name}: {n} -> {out_dir / _out_name(f)}")
    finally:
        bar.close()
    if cancelled:
        log(f"cancelled; {len(written)} file(s) written to {out_dir}")
        return EXIT_CANCELLED
    print(f"wrote {len(written)} file(s) to {out_dir} in {time.monotonic() - start:.1f} s")
    return 0


def _guess_for_model(shape: tuple, rgb: bool, model, channels) -> str:
    """Guessed axes, where a small leading axis is not taken for channels the model cannot use.

    ``guess_axes`` reads (3, 512, 512) as CYX; for a one-channel model a 3-slice
    Z stack is the likelier meaning (and T after that when Z is taken).
    """
    from . import tasks
    from .axes import guess_axes

    axes = guess_axes(shape, rgb=rgb)
    if rgb or channels is not None or "C" not in axes:
        return axes
    if tasks.accepts_channels(model, shape[axes.index("C")]):
        return axes
    for other in "ZT":
        if other not in axes:
            return axes.replace("C", other)
    return axes


class _TiffOutputs:
    """The job runner's output factory: each output a memory-mapped TIFF on disk.

    Files are written under a temporary name and renamed when the image is done,
    so a cancelled or failed run leaves no half-written TIFF with a real name.
    """

    def __init__(self, folder: Path, source: Path, plan) -> None:
        self.folder, self.source, self.plan = folder, source, plan
        self.files: dict[str, tuple[Path, Path, Any]] = {}

    def __call__(self, name: str, shape: tuple, dtype) -> Any:
        import numpy as np
        import tifffile

        final = self.folder / _out_name(self.source, "" if name in ("labels", "image") else name)
        tmp = final.with_name(f".{final.name}.partial")
        channels = len(shape) != len(self.plan.out_shape())
        meta = {"axes": self.plan.out_axes(channels)}
        big = int(np.prod(shape)) * np.dtype(dtype).itemsize > 2**31
        arr = tifffile.memmap(tmp, shape=shape, dtype=dtype, metadata=meta, bigtiff=big)
        self.files[name] = (tmp, final, arr)
        return arr

    def commit(self) -> list[Path]:
        done = []
        for tmp, final, arr in self.files.values():
            arr.flush()
            del arr
            os.replace(tmp, final)
            done.append(final)
        self.files.clear()
        return done

    def discard(self) -> None:
        for tmp, _, _ in self.files.values():
            try:
                tmp.unlink()
            except OSError:
                pass
        self.files.clear()


def cmd_models(args) -> int:
    infos = store.list_models()
    if args.json:
        rows = [{**i.to_json(), "path": str(i.path)} for i in infos]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not infos:
        print(f"no models in {store.store_root()}")
        return 0
    rows = [("NAME", "BACKEND", "CREATED", "AP@0.5", "F1", "PATH")]
    for i in infos:
        rows.append(
            (
                i.name,
                i.backend,
                i.created[:19].replace("T", " "),
                _num(i.metrics.get("ap50")),
                _num(i.metrics.get("f1")),
                str(i.path),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    return 0


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


# --- demo -----------------------------------------------------------------------------
DEMO_TRAIN_SEEDS = (1, 2, 3, 4)
DEMO_TEST_SEED = 100
DEMO_ENOUGH_STEPS = 150


def demo_settings(minutes: float):
    """Small U-Net settings that learn synthetic nuclei within about a minute on a laptop CPU."""
    from .backends import get

    be = get("unet")
    return be.Settings(
        minutes=minutes,
        epochs=1000,
        steps_per_epoch=20,
        batch_size=4,
        patch_size=128,
        base_width=16,
        depth=3,
        val_fraction=0.25,
        seed=0,
    )


def cmd_demo(args) -> int:
    import numpy as np
    import tifffile

    from . import data as data_mod
    from . import samples, tasks
    from .metrics import match

    if args.minutes <= 0:
        raise CLIError("--minutes must be positive")
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    log = _log(args)
    pairs = [samples.nuclei_2d((256, 256), seed=s) for s in DEMO_TRAIN_SEEDS]
    test_img, test_gt = samples.nuclei_2d((384, 384), seed=DEMO_TEST_SEED)
    for k, (img, lab) in enumerate(pairs):
        tifffile.imwrite(out / f"train_image_{k}.tif", img)
        tifffile.imwrite(out / f"train_labels_{k}.tif", lab)
    tifffile.imwrite(out / "test_image.tif", test_img)
    tifffile.imwrite(out / "test_labels.tif", test_gt)
    data = data_mod.combine(
        [
            data_mod.from_arrays(
                i, lab, "YX", name=f"train_image_{k}.tif", labels_name=f"train_labels_{k}.tif"
            )
            for k, (i, lab) in enumerate(pairs)
        ]
    )
    log(
        f"synthetic data written to {out}; training a small U-Net for {args.minutes:g} min "
        "(Ctrl-C stops early and keeps the best model)"
    )
    bar = ProgressBar("train", enabled=not args.quiet)
    steps = [0]

    def on_progress(p: Progress) -> None:
        steps[0] += "loss" in p.metrics  # one report with a loss per training step
        bar(p)

    ctx = JobContext(on_progress)
    model_dir = out / "model"
    try:
        with _CancelOnInterrupt(ctx):
            outcome = tasks.train("unet", data, demo_settings(args.minutes), str(model_dir), ctx)
    except Cancelled as exc:
        bar.close()
        log(str(exc))
        return EXIT_CANCELLED
    finally:
        bar.close()
    pred = tasks.predict(outcome.model, test_img, "YX").outputs["labels"]
    tifffile.imwrite(out / "test_prediction.tif", np.asarray(pred, np.int32))
    m = match(test_gt, pred)
    fit = outcome.fit
    print(
        f"trained {steps[0]} step(s) ({fit.epochs} epoch(s)) in {fit.seconds:.0f} s ({fit.stopped}); "
        f"model: {outcome.path}"
    )
    print(f"test image: {m.n_true} true, {m.n_pred} predicted objects; AP@0.5 = {m.ap:.3f}, F1 = {m.f1:.3f}")
    if steps[0] < DEMO_ENOUGH_STEPS:
        # About 100 steps are needed for AP@0.5 above 0.6 on these images; a busy or slow CPU gets fewer.
        print(
            f"note: only {steps[0]} training step(s) fit into {args.minutes:g} min on this machine; "
            f"about {DEMO_ENOUGH_STEPS}+ are needed for a good result: try --minutes "
            f"{max(2, math.ceil(args.minutes * DEMO_ENOUGH_STEPS / max(steps[0], 1)))}"
        )
    print(f"files in {out}: test_image.tif, test_labels.tif, test_prediction.tif, train_*.tif, model/")
    if args.gui:
        _demo_gui(test_img, test_gt, pred)
    return 0


def _demo_gui(image, gt, pred) -> None:
    try:
        import napari
    except ImportError as exc:
        raise CLIError(f"--gui needs napari with a Qt binding: {exc}") from None
    viewer = napari.Viewer(title="napari-dlbio demo")
    viewer.add_image(image, name="test_image")
    viewer.add_labels(gt, name="ground_truth", visible=False)
    viewer.add_labels(pred, name="prediction")
    for widget in ("Train", "Predict"):
        try:
            viewer.window.add_plugin_dock_widget("napari-dlbio", widget)
        except Exception as exc:  # noqa: BLE001 - the layers are still worth showing
            print(f"could not open the {widget} dock: {exc}", file=sys.stderr)
    napari.run()


# --- entry point -------------------------------------------------------------------------
_USER_ERRORS = (
    CLIError,
    store.ModelError,
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    ImportError,
    MemoryError,
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        train_be, predict_be = _backends_for(argv)
        parser = build_parser(train_be, predict_be)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "train":
            return cmd_train(args, train_be or _get_backend(args.backend))
        if args.command == "predict":
            if predict_be is None:
                name = args.backend or store.read_info(store.resolve(args.model)).backend
                predict_be = _get_backend(name)
            return cmd_predict(args, predict_be)
        if args.command == "models":
            return cmd_models(args)
        if args.command == "demo":
            return cmd_demo(args)
        parser.error(f"unknown command {args.command!r}")
    except SystemExit as exc:  # argparse: --help, --version, usage errors (status 2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0
    except KeyboardInterrupt:
        print(f"\n{PROG}: aborted", file=sys.stderr)
        return EXIT_CANCELLED
    except _USER_ERRORS as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, details with --debug
        if debug:
            raise
        print(
            f"{PROG}: unexpected {type(exc).__name__}: {_one_line(exc)} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
