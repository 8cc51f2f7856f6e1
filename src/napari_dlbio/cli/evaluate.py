"""``napari-dlbio evaluate``: compare models and other tools' labels on image/label folders.

Every ``--model`` (store name or model folder), ``--pretrained BACKEND:NAME`` and
``--predictions DIR`` (label files named like the images, e.g. another tool's
results) is scored against ``--labels`` on the images of ``--images`` matched by
file name (:mod:`napari_dlbio.comparison`). The table (one row per candidate, the
mean over images) goes to stdout, best first; ``--csv`` also writes one row per
candidate and image plus the candidate's ``all`` row.
"""

from __future__ import annotations

import math
import time

from .. import backends
from ..execution import Call, InProcessExecutor, JobCallbacks
from ..scoreboard import ALL_METRICS, IMAGE_METRICS, Comparison, default_sort
from .common import CLIError, _log
from .progress import ProgressBar, _CancelOnInterrupt

SHOWN = ("AP@0.50", "AP@0.75", "AP@0.90", "precision@0.50", "recall@0.50", "F1@0.50", "mean_iou", "PQ")


def add_parser(sub, common) -> None:
    """The ``evaluate`` command's options (``sub``: the command subparsers)."""
    e = sub.add_parser(
        "evaluate", parents=[common], help="compare models (and other tools' labels) on image/label folders",
        description="Score models and label images against ground-truth labels, matched by file name: AP "
        "(TP/(TP+FP+FN), as StarDist and DSB 2018 define it) at IoU 0.50..0.95, precision, recall, F1, mean "
        "matched IoU and panoptic quality. Label files holding only 0 are not annotated and are left out.",
        epilog="example: evaluate --model mine --pretrained cellpose:cpsam --predictions other_tool/ "
        "--images val/images --labels val/masks --csv scores.csv")
    e.add_argument("--model", action="append", default=[], metavar="MODEL",
                   help="a model to apply: store name or model folder (repeat for more)")
    e.add_argument("--pretrained", action="append", default=[], metavar="BACKEND:NAME",
                   help="a backend's pretrained model, e.g. cellpose:cpsam or stardist:2D_versatile_fluo")
    e.add_argument("--predictions", action="append", default=[], metavar="DIR",
                   help="a folder of label files named like the images (another tool's results)")
    e.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    truth = e.add_mutually_exclusive_group(required=True)
    truth.add_argument("--labels", metavar="DIR", help="folder of ground-truth label files")
    truth.add_argument("--clean", metavar="DIR", help="for restoration (denoising) models: folder of clean "
                       "reference images named like the images; scored by PSNR and SSIM")
    e.add_argument("--csv", metavar="FILE", help="also write every candidate's per-image scores here")
    e.add_argument("--sort", default=None, choices=ALL_METRICS, metavar="METRIC",
                   help="order of the table, best first (default: AP@0.50, with --clean PSNR; any CSV "
                   "metric column)")


def candidates_from_args(args) -> list:
    from ..comparison import Candidate

    out = [Candidate.of_model(m) for m in args.model]
    for text in args.pretrained:
        backend, sep, name = text.partition(":")
        if not sep or not backend or not name:
            raise CLIError(f"--pretrained takes BACKEND:NAME (e.g. cellpose:cpsam), not {text!r}")
        if backend not in backends.names():
            known = ", ".join(backends.names())
            raise CLIError(f"--pretrained {text}: no backend {backend!r} (backends: {known})")
        out.append(Candidate.parse(text))
    out += [Candidate.of_folder(d) for d in args.predictions]
    if not out:
        raise CLIError("give at least one --model, --pretrained or --predictions to evaluate")
    return out


def cmd_evaluate(args) -> int:
    from .. import comparison

    log = _log(args)
    try:
        truth = comparison.truth_from_folders(args.images, args.clean or args.labels, reference=bool(args.clean))
        candidates = candidates_from_args(args)
        comparison.check(truth, candidates)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    sort = args.sort or default_sort(truth.kind)
    if (sort in IMAGE_METRICS) != (truth.kind == "image"):
        raise CLIError(f"--sort {sort}: " + ("PSNR/SSIM need --clean" if truth.kind != "image"
                                              else "with --clean the metrics are PSNR and SSIM"))
    log(f"evaluating {len(candidates)} candidate(s) on {len(truth.items)} annotated image(s)")
    start = time.monotonic()
    result = _run(args, truth, candidates)
    for c in result.candidates:
        _log_failures(log, c)
    print(table(result, sort))
    if args.csv:
        log(f"wrote {result.write_csv(args.csv, sort)}")
    log(f"done in {time.monotonic() - start:.1f} s")
    if not any(c.scored for c in result.candidates):
        raise CLIError("no candidate could be scored on any image (see the messages above)")
    return 0


def _run(args, truth, candidates) -> Comparison:
    """In this process, through the executor interface, with a progress bar and Ctrl-C to cancel."""
    from .. import comparison

    bar = ProgressBar("evaluate", enabled=not args.quiet)
    executor = InProcessExecutor()
    try:
        with _CancelOnInterrupt(lambda: executor.context):
            return executor.run(Call(comparison.compare, (truth, candidates)), JobCallbacks(progress=bar))
    finally:
        bar.close()


def _log_failures(log, c) -> None:
    if c.error:
        log(f"{c.name}: {c.error}")
    for msg in c.failures.values():
        log(f"{c.name}: failed on {msg}")


def table(result: Comparison, sort: str = "AP@0.50") -> str:
    """One line per candidate (its mean over images), best first by ``sort``."""
    base = IMAGE_METRICS if result.kind == "image" else SHOWN
    shown = base if sort in base else (*base, sort)
    rows = [("CANDIDATE", *shown, "IMAGES")]
    for c in result.ranked(sort):
        mean = c.mean()
        n = f"{len(c.scored)}/{len(c.items)}" if not c.error else "failed"
        rows.append((c.name, *(_num(mean[m]) for m in shown), n))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def _num(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.3f}"
