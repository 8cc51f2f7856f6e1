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
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__, store
from ..jobs import JobContext
from .common import EXIT_CANCELLED, EXIT_USAGE, OWN_PREFIX, PROG, CLIError, _log
from .demo import DEMO_ENOUGH_STEPS, DEMO_TEST_SEED, DEMO_TRAIN_SEEDS, _demo_gui, cmd_demo, demo_settings
from .images import _expand_inputs, _file_axes, _guess_for_model, _OpenImage, _out_name, _TiffOutputs
from .progress import ProgressBar, _CancelOnInterrupt, _clock, train_with_progress

__all__ = [
    "DEMO_ENOUGH_STEPS",
    "DEMO_TEST_SEED",
    "DEMO_TRAIN_SEEDS",
    "EXIT_CANCELLED",
    "EXIT_USAGE",
    "OWN_PREFIX",
    "PROG",
    "CLIError",
    "ProgressBar",
    "build_parser",
    "cmd_demo",
    "cmd_models",
    "cmd_predict",
    "cmd_train",
    "demo_settings",
    "main",
    "_CancelOnInterrupt",
    "_OpenImage",
    "_TiffOutputs",
    "_clock",
    "_demo_gui",
    "_expand_inputs",
    "_file_axes",
    "_guess_for_model",
    "_log",
    "_out_name",
]


# --- settings options ------------------------------------------------------------------
def _add_settings_options(parser: argparse.ArgumentParser, model_cls, title: str, taken: set[str]) -> None:
    """One option per settings field; values stay strings and are parsed/validated later."""
    from ..settings_fields import fields

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
    from ..settings_fields import build, fields

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
    from ..backends import names

    BACKENDS = names()
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
    from .. import backends

    cmd = next((a for a in argv if not a.startswith("-")), None)
    if cmd == "train":
        name = _peek(argv, "--backend")["backend"] or "unet"
        if name not in backends.names():
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
        if name is None or name not in backends.names():
            return None, None
        return None, _get_backend(name)
    return None, None


def _get_backend(name: str):
    from .. import backends

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
    from .. import data as data_mod

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
            if not backend.spec.has_pretrained:
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
    outcome = train_with_progress(bar, bar, log, backend.name, data, settings, args.out,
                                  start_from=args.start_from)
    if outcome is None:
        return EXIT_CANCELLED
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


def cmd_predict(args, backend) -> int:
    import numpy as np

    from .. import tasks
    from ..axes import ItemPlan, validate_axes

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
                    plan = ItemPlan(axes, shape, model.item_ndim(settings), channels)
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
                    if tasks.SHAPES in pred.outputs:
                        outputs.add_shapes(pred.outputs[tasks.SHAPES], pred.axes[tasks.SHAPES])
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
