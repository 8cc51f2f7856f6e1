"""The ``napari-dlbio`` command: train, predict, list models, run a demo, suggest what to annotate.

The CLI is a thin shell around :mod:`napari_dlbio.tasks`, the same job runner the
GUI uses. Each backend's options are generated from its pydantic settings (see
:mod:`napari_dlbio.settings_fields`), so ``napari-dlbio train --backend unet
--help`` always lists what that backend really accepts. Errors the user can fix
print one line and exit with status 2 (``--debug`` shows the traceback).

One module per command (:mod:`.train`, :mod:`.predict`, :mod:`.models`,
:mod:`.demo`, :mod:`.evaluate`, :mod:`.suggest`); :mod:`.parser` builds the parser. This module only
dispatches.
"""

from __future__ import annotations

# First: common takes the time the command's budget counts from (see common.STARTED).
from .common import EXIT_CANCELLED, EXIT_USAGE, OWN_PREFIX, PROG, STARTED, CLIError, _log  # isort: skip

import os
import sys
from collections.abc import Sequence

from .. import store
from ..formatting import USER_ERRORS, describe_error
from ..formatting import clock as _clock
from .demo import DEMO_ENOUGH_STEPS, DEMO_TEST_SEED, DEMO_TRAIN_SEEDS, _demo_gui, cmd_demo, demo_settings
from .images import _expand_inputs, _file_axes, _guess_for_model, _OpenImage, _out_name, _TiffOutputs
from .evaluate import cmd_evaluate
from .models import cmd_models
from .parser import backend_spec, backends_for, build_parser
from .predict import cmd_predict
from .progress import ProgressBar, _CancelOnInterrupt
from .train import cmd_train

__all__ = [
    "DEMO_ENOUGH_STEPS",
    "DEMO_TEST_SEED",
    "DEMO_TRAIN_SEEDS",
    "EXIT_CANCELLED",
    "EXIT_USAGE",
    "OWN_PREFIX",
    "PROG",
    "STARTED",
    "CLIError",
    "ProgressBar",
    "build_parser",
    "cmd_demo",
    "cmd_evaluate",
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors (status 2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0
    except KeyboardInterrupt:
        print(f"\n{PROG}: aborted", file=sys.stderr)
        return EXIT_CANCELLED
    except USER_ERRORS as exc:
        if "--debug" in argv:
            raise
        print(f"{PROG}: error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, details with --debug
        if "--debug" in argv:
            raise
        print(f"{PROG}: unexpected {describe_error(exc)} (run with --debug for details)", file=sys.stderr)
        return 1


def _run(argv: list[str]) -> int:
    train_be, predict_be = backends_for(argv)
    parser = build_parser(train_be, predict_be)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "train":
        return cmd_train(args, train_be or backend_spec(args.backend))
    if args.command == "predict":
        if predict_be is None:
            predict_be = backend_spec(args.backend or store.read_info(store.resolve(args.model)).backend)
        if args.cluster is not None:  # the files go to dask.distributed workers
            from .on_cluster import cmd_predict_on_cluster

            return cmd_predict_on_cluster(args, predict_be)
        return cmd_predict(args, predict_be)
    if args.command == "models":
        return cmd_models(args)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "evaluate":
        return cmd_evaluate(args)
    if args.command == "export":
        from .export import cmd_export

        return cmd_export(args)
    if args.command == "suggest":
        from .suggest import cmd_suggest

        return cmd_suggest(args)
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE  # not reached: parser.error exits
