"""What every part of the ``napari-dlbio`` command shares: constants, the user error, logging."""

from __future__ import annotations

import sys
import time

# The command's time budget (train --minutes) counts from here, so that start-up and reading the
# data are part of it: napari_dlbio.cli imports this module first.
STARTED = time.monotonic()

from ..formatting import UserError  # noqa: E402 - after STARTED, which is taken first

PROG = "napari-dlbio"
EXIT_USAGE = 2
EXIT_CANCELLED = 130
OWN_PREFIX = "s__"  # argparse dest prefix of options generated from a settings model


class CLIError(UserError):
    """A problem the user can fix; printed as one line, exit status 2."""


def _log(args):
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


def channels_option(text: str | None) -> tuple[int, ...] | None:
    """``--channels 0,1`` as a tuple; None (all channels) when not given."""
    if not text:
        return None
    try:
        return tuple(int(c) for c in text.replace(" ", "").split(",") if c)
    except ValueError:
        raise CLIError(f"--channels takes channel numbers like 0,1 (not {text!r})") from None
