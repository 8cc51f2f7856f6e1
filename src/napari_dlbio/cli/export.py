"""``napari-dlbio export``: a saved model as a bioimage.io model zip (and, with ``--check``, its test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import CLIError, _log


def add_parser(sub, common) -> None:
    e = sub.add_parser(
        "export",
        parents=[common],
        help="write a model as a bioimage.io model zip (napari, deepImageJ, ilastik, the BioImage Model Zoo)",
        description="Write a saved model (U-Net, StarDist, Noise2Void/CARE/Noise2Noise) as a bioimage.io model "
        "package (spec 0.5): PyTorch state dict and TorchScript weights, test input and output, cover, "
        "documentation and the model folder itself, so that `--model OUT.zip` restores it in full.",
    )
    e.add_argument("model", metavar="MODEL", help="store name or model folder")
    e.add_argument("out", metavar="OUT.zip", help="the zip to write")
    e.add_argument("--example", metavar="IMAGE",
                   help="image whose first item (plane or volume) becomes the test input and cover "
                   "(default: a synthetic nuclei image)")
    e.add_argument("--axes", help="axes of --example, e.g. YX, CYX, ZYX (default: guessed)")
    e.add_argument("--author", action="append", metavar="NAME", help="an author (repeat for several)")
    e.add_argument("--force", action="store_true", help="replace OUT.zip if it exists")
    e.add_argument("--check", action="store_true",
                   help="then run bioimageio.core's test on the zip (loads it, runs the test input, compares)")


def cmd_export(args) -> int:
    from .. import tasks
    from ..bioimageio_export import export_model, validate_zip

    log = _log(args)
    model = tasks.load_model(args.model)
    example = _example(args, model) if args.example else None
    out = export_model(model, args.out, example=example, authors=args.author, force=args.force)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    print(out)
    if args.check:
        status, details = validate_zip(out)
        print(f"bioimageio.core test: {status}{f' ({details})' if details else ''}")
        return 0 if status == "passed" else 1
    return 0


def _example(args, model) -> np.ndarray:
    from .. import tasks
    from .images import _OpenImage

    path = Path(args.example).expanduser()
    if not path.is_file():
        raise CLIError(f"--example {path}: no such file")
    with _OpenImage(path) as img:
        return tasks.first_item(model, img.array, args.axes or img.axes, rgb=img.rgb)
