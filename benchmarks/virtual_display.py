"""A virtual X display for the benchmarks that open napari windows (Xvfb through pyvirtualdisplay)."""

from __future__ import annotations

import os
import sys


def start_display(size: tuple[int, int] = (1600, 1000)):
    """Start one on Linux when no display is set (it sets ``DISPLAY``); returns it (``stop()`` it) or None."""
    if os.environ.get("DISPLAY") or sys.platform != "linux":
        return None
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=size, color_depth=24)
    display.start()
    return display
