"""``napari-dlbio suggest``: which images (slices, tiles) of a folder to annotate next.

Ranks every unannotated item of ``--images`` (those whose label file in
``--labels`` holds only 0, or all without ``--labels``) by the model's
test-time disagreement (:mod:`napari_dlbio.suggest`) and prints the top ``-n``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .. import backends
from ..execution import Call, InProcessExecutor, JobCallbacks
from .common import EXIT_CANCELLED, CLIError, _log, channels_option
from .images import _guess_for_model
from .progress import ProgressBar, _CancelOnInterrupt

COLUMNS = ("rank", "image", "item", "tile", "uncertainty", "objects")


def add_parser(sub, common) -> None:
    s = sub.add_parser(
        "suggest",
        parents=[common],
        help="rank unannotated images/slices/tiles by model uncertainty: what to annotate next",
        description="Predict each unannotated item (and each tile of images larger than --tile-above "
        "pixels) flipped and rotated, and rank them by how much the predictions disagree "
        "(1 - mean IoU of matched objects; normalised variance for image models). "
        "Annotate the top ones, then fine-tune.",
    )
    s.add_argument("--model", required=True, metavar="MODEL", help="store name or model folder")
    s.add_argument("--backend", choices=list(backends.names()),
                   help="backend of a pretrained model (its name or file as --model)")
    s.add_argument("--images", required=True, metavar="DIR", help="folder (or file) of images")
    s.add_argument("--labels", metavar="DIR",
                   help="folder of label images with the same names: annotated items are skipped")
    s.add_argument("-n", type=int, default=5, help="how many suggestions to print (default: 5)")
    s.add_argument("--csv", metavar="FILE", help="also write every ranked item to this CSV file")
    s.add_argument("--axes", help="axes of the images, e.g. YX, ZYX, TYX (default: guessed)")
    s.add_argument("--channels", metavar="I,J", help="input channels to use (default: all)")
    s.add_argument("--tile", type=int, default=512, metavar="N",
                   help="tile size of large images (default: 512)")
    s.add_argument("--tile-above", type=int, default=1024, metavar="N",
                   help="rank 2D images larger than this (either side) tile by tile (default: 1024)")


def cmd_suggest(args) -> int:
    from .. import suggest, tasks

    if args.n < 1:
        raise CLIError(f"-n must be at least 1 (not {args.n})")
    if args.tile < 16 or args.tile_above < args.tile:
        raise CLIError("--tile must be at least 16 and --tile-above at least --tile")
    csv_path = Path(args.csv).expanduser() if args.csv else None
    if csv_path is not None and not csv_path.parent.is_dir():
        raise CLIError(f"--csv: no such folder {csv_path.parent}")
    channels = channels_option(args.channels)
    sources = suggest.folder_sources(args.images, args.labels, args.axes, channels)
    try:
        model = tasks.load_model(args.model, args.backend)
    except (ImportError, RuntimeError) as exc:
        raise CLIError(f"cannot load model {args.model!r}: {exc}") from None
    for src in sources:
        # As predict does: a small leading axis the model cannot take as channels is Z (or T).
        src.axes = src.axes or _guess_for_model(tuple(src.data.shape), False, model, channels)
    log = _log(args)
    log(f"ranking the unannotated items of {len(sources)} image(s) with {tasks.model_name(model)}")
    found = _rank(args, model, sources)
    if found is None:
        log("cancelled")
        return EXIT_CANCELLED
    _print(found[: args.n], len(found))
    if csv_path is not None:
        write_csv(csv_path, found)
        log(f"wrote {len(found)} row(s) to {csv_path}")
    return 0


def _rank(args, model, sources):
    """Every unannotated item ranked; None when Ctrl-C cancelled."""
    from ..jobs import Cancelled
    from ..suggest import suggest

    bar = ProgressBar("suggest", enabled=not args.quiet)
    executor = InProcessExecutor()
    kwargs = {"tile": args.tile, "tile_above": args.tile_above}
    try:
        with _CancelOnInterrupt(lambda: executor.context):
            return executor.run(Call(suggest, (model, sources), kwargs), JobCallbacks(progress=bar))
    except Cancelled:
        return None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()


def _print(top, total: int) -> None:
    from ..suggest import iter_rows

    if not top:
        print("nothing to suggest: every item is annotated")
        return
    rows = [COLUMNS] + [tuple(str(r[c]) for c in COLUMNS) for r in iter_rows(top)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(COLUMNS))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    if total > len(top):
        print(f"({len(top)} of {total} unannotated items shown; --csv FILE writes all)")


def write_csv(path: Path, found) -> None:
    """All rows, written to a temporary file first so that a cut-short write leaves no half CSV."""
    from ..suggest import iter_rows

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS)
            w.writeheader()
            w.writerows(iter_rows(found))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
