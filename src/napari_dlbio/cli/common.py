"""What every part of the ``napari-dlbio`` command shares: constants, the user error, logging."""

from __future__ import annotations

import sys

PROG = "napari-dlbio"
EXIT_USAGE = 2
EXIT_CANCELLED = 130
OWN_PREFIX = "s__"  # argparse dest prefix of options generated from a settings model


class CLIError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def _log(args):
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    return log
