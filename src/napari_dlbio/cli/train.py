"""``napari-dlbio train``: train (or fine-tune) a model on image/label folders."""

from __future__ import annotations

from .. import store
from ..formatting import metrics_line
from ..jobs import Deadline
from .common import EXIT_CANCELLED, STARTED, CLIError, _log, channels_option
from .options import settings_from_args
from .progress import ProgressBar, train_with_progress


def cmd_train(args, backend) -> int:
    """Train a model of ``backend`` (a BackendSpec); 0, or EXIT_CANCELLED if nothing was saved."""
    if backend.needs_labels and not args.labels:
        raise CLIError(f"--labels is required to train a {backend.name} model (it learns from label images)")
    settings = settings_from_args(args, backend.Settings, _base_settings(args, backend))
    if settings.needs_targets() and not args.targets:
        raise CLIError(f"--targets is required with these settings: {settings.target_help()}")
    dest = store.destination(args.out)
    if dest.exists() and not args.overwrite:
        raise CLIError(f"{dest} exists; choose another --out or pass --overwrite")
    # --minutes is the whole command's budget: start-up and reading the data count too.
    deadline = Deadline(settings.minutes, start=STARTED)
    log = _log(args)
    if args.targets and not settings.needs_targets():
        log(f"note: --targets {args.targets} is ignored: the chosen algorithm learns from the images alone")
        args.targets = None
    data = _read_data(args)
    log(
        f"training a {backend.title} model on {len(data)} item(s) "
        f"({data.ndim}D, {data.n_channels} channel(s)); Ctrl-C stops and keeps the best model"
    )
    bar = ProgressBar("train", enabled=not args.quiet)
    outcome = train_with_progress(bar, bar, log, backend.name, data, settings, args.out,
                                  start_from=args.start_from, deadline=deadline)
    if outcome is None:
        return EXIT_CANCELLED
    _print_outcome(outcome)
    return 0


def _base_settings(args, backend) -> dict | None:
    """The settings of the ``--from`` model, which the options given override (None: defaults)."""
    if not args.start_from:
        return None
    try:
        info = store.read_info(store.resolve(args.start_from))
    except store.ModelError:
        if not backend.has_pretrained:
            raise
        return None  # a pretrained name/file of the backend (e.g. cellpose 'cpsam'): its own defaults
    if info.backend != backend.name:
        raise CLIError(f"--from {args.start_from}: a {info.backend} model, not {backend.name}")
    return info.settings


def _read_data(args):
    from .. import data as data_mod

    channels = channels_option(args.channels)
    if args.targets:
        from .. import pairs

        parts = [pairs.from_folders(path, args.targets, args.axes, args.ndim, channels) for path in args.images]
    else:
        parts = [data_mod.from_folders(path, args.labels, args.axes, args.ndim, channels) for path in args.images]
    return data_mod.combine(parts) if len(parts) > 1 else parts[0]


def _print_outcome(outcome) -> None:
    fit = outcome.fit
    print(f"model: {outcome.path}")
    print(
        f"training: {fit.epochs} epoch(s) in {fit.seconds:.0f} s, stopped: {fit.stopped}, "
        f"best epoch {fit.best_epoch} (loss {fit.best_loss:.4f})"
    )
    scores = metrics_line(outcome.metrics)
    if scores:
        print(f"validation: {scores}")
