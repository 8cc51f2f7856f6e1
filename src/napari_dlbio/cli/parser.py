"""The argument parser, with the chosen backend's settings as options.

Which backend's options to offer is read from argv before the full parse
(:func:`backends_for`); only the backend's spec is needed for that, never its
model code, so ``--help`` and usage errors stay fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__, backends, store
from .common import PROG, CLIError
from .evaluate import add_parser as add_evaluate_parser
from .export import add_parser as add_export_parser
from .options import add_settings_options
from .suggest import add_parser as add_suggest_parser


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def build_parser(train_backend=None, predict_backend=None) -> argparse.ArgumentParser:
    """The whole parser; a backend (spec) given adds its settings to ``train`` or ``predict``."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deep learning for microscopy: train and apply segmentation and denoising models.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    specs = backends.specs()
    _add_train(sub, common, specs, train_backend)
    _add_predict(sub, common, specs, predict_backend)
    _add_models(sub, common)
    _add_demo(sub, common)
    add_evaluate_parser(sub, common)
    add_suggest_parser(sub, common)
    add_export_parser(sub, common)
    return parser


def _taken(parser: argparse.ArgumentParser) -> set[str]:
    """Options a command has already, which a settings field of the same name must not shadow."""
    return {a for act in parser._actions for a in act.option_strings}


def _add_train(sub, common, specs: dict, backend) -> None:
    names = list(specs)
    self_supervised = [n for n, s in specs.items() if not s.needs_labels]
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a model on image/label folders",
        description="Train a model. Images and labels (or targets) are matched by file name; only images whose "
        "labels contain at least one object are used. Ctrl-C stops and keeps the best model.",
        epilog=f"backends: {', '.join(names)}. '{PROG} train --backend NAME --help' lists its settings.",
    )
    t.add_argument("--backend", default=backends.DEFAULT, choices=names,
                   help=f"model family (default: {backends.DEFAULT})")
    t.add_argument(
        "--images", required=True, nargs="+", metavar="PATH", help="folder(s) or file(s) of training images"
    )
    not_needed = f" (not needed for {', '.join(self_supervised)})" if self_supervised else ""
    t.add_argument(
        "--labels", metavar="DIR", help=f"folder of label images with the same file names{not_needed}"
    )
    t.add_argument(
        "--targets", metavar="DIR",
        help="folder of target images with the same file names and shapes, for algorithms that learn from "
        "pairs (n2v backend: --algorithm care: clean images; n2n: second noisy acquisitions)",
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
    if backend is not None:
        add_settings_options(t, backend.Settings, backend.name, _taken(t))


def _add_predict(sub, common, specs: dict, backend) -> None:
    pretrained = "|".join(n for n, s in specs.items() if s.has_pretrained)
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="apply a model to image files, OME-Zarr/zarr stores or folders",
        description="Apply a model to images (TIFF, PNG, JPEG, OME-Zarr, zarr); writes one output per "
        "input, with the same name, into --out: a TIFF, or an OME-Zarr store (see --out-format).",
        epilog="Options of the model's backend are listed when --model (or --backend) is given "
        "before --help.",
    )
    also = f"; with --backend {pretrained} also a pretrained name/path" if pretrained else ""
    p.add_argument("--model", required=True, metavar="MODEL", help=f"store name or model folder{also}")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, zarr stores or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--backend", choices=list(specs), help="backend of a pretrained model")
    p.add_argument(
        "--axes", help="axes of the inputs, e.g. YX, ZYX, TYX, CYX (default: from file or guessed)"
    )
    p.add_argument("--channels", metavar="I,J", help="input channels to use (default: all)")
    p.add_argument("--objects", action="store_true",
                   help="also write <stem>_objects.csv beside each output: label,score,area,centroid_* per "
                   "object (instance models; not for images predicted block by block)")
    _add_large_image_options(p)
    p.add_argument(
        "--cluster", nargs="?", const="", metavar="WHERE",
        help="predict on a Dask cluster (needs napari-dlbio[cluster]): local:N starts N worker processes "
        "here, tcp://HOST:PORT uses a running dask scheduler; alone: $SCHEDULER_ADDRESS "
        "(default: in this process)",
    )
    if backend is not None:
        add_settings_options(p, backend.Predict, backend.name, _taken(p))


def _add_large_image_options(p) -> None:
    """Output format and blockwise prediction of images larger than memory."""
    g = p.add_argument_group("large images")
    g.add_argument("--out-format", choices=("tif", "zarr", "ome-zarr"),
                   help="tif, zarr or ome-zarr (default: ome-zarr for OME-Zarr inputs and outputs over "
                   "~2 GB, tif otherwise)")
    g.add_argument("--block-size", type=int, metavar="N",
                   help="pixels per block edge for images larger than a block (default: from --memory-limit)")
    g.add_argument("--block-overlap", type=int, metavar="N",
                   help="pixels of overlap around each block (default: from the model)")
    g.add_argument("--memory-limit", metavar="SIZE",
                   help="memory for one block's work, e.g. 2GB (default: the engine's)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: keep its finished outputs and blocks")


def _add_models(sub, common) -> None:
    m = sub.add_parser(
        "models",
        parents=[common],
        help="list the models in the store",
        description=f"List the models in {store.store_root()}.",
    )
    m.add_argument("--json", action="store_true", help="machine-readable output")


def _add_demo(sub, common) -> None:
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


# --- which backend, before the full parse ---------------------------------------------------
def _peek(argv: Sequence[str], *options: str) -> dict[str, str | None]:
    """Values of a few options before the full parse (to pick the backend's options)."""
    pre = argparse.ArgumentParser(add_help=False)
    for o in options:
        pre.add_argument(o)
    known, _ = pre.parse_known_args(list(argv))
    return vars(known)


def backends_for(argv: Sequence[str]):
    """The specs of the backends whose options ``train`` / ``predict`` must offer, from argv."""
    cmd = next((a for a in argv if not a.startswith("-")), None)
    if cmd == "train":
        name = _peek(argv, "--backend")["backend"] or backends.DEFAULT
        if name not in backends.names():
            return None, None  # argparse's choices check reports it
        return backend_spec(name), None
    if cmd == "predict":
        name = _predict_backend_name(argv)
        if name is None or name not in backends.names():
            return None, None
        return None, backend_spec(name)
    return None, None


def _predict_backend_name(argv: Sequence[str]) -> str | None:
    """``--backend``, else the backend of the store model ``--model`` names (None: not known yet)."""
    given = _peek(argv, "--backend", "--model")
    if given["backend"] is not None or not given["model"]:
        return given["backend"]
    try:
        return store.read_info(store.resolve(given["model"])).backend
    except store.ModelError:
        if "-h" in argv or "--help" in argv:
            return None  # the help without the backend's options, rather than an error
        raise


def backend_spec(name: str):
    """The spec of backend ``name``; an install hint when its packages are missing.

    Only the spec: importing the model code (torch, the backend's library) is left
    to the job, so that the parser and usage errors stay fast.
    """
    try:
        return backends.installed_spec(name)
    except (ValueError, ImportError) as exc:
        raise CLIError(str(exc)) from None
