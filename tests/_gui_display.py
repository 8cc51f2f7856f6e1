"""Can Qt open a window here? Decided without importing Qt (a failed QApplication aborts the process).

Used by ``tests/conftest.py`` to skip the GUI tests on a machine without an X server instead of
letting pytest-qt's ``qapp`` fixture kill the whole run with ``Fatal Python error: Aborted``.
The check runs at collection time, after every ``pytest_configure``: when pytest-xvfb found
``Xvfb`` it has already started it and pointed ``DISPLAY`` at it.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping

NO_X_SERVER = "no X server: install xvfb to run the GUI tests"


def x_server_answers(display: str, timeout: float = 2.0) -> bool:
    """Whether an X server accepts connections at ``display`` (``:0``, ``:99.0``, ``host:10.0``)."""
    m = re.fullmatch(r"(?:(\w+)/)?([^:/]*):(\d+)(?:\.\d+)?", display)
    if m is None:
        return bool(display)  # an unusual form (e.g. a socket path): let Qt try it
    proto, host, num = m.groups()
    if proto == "unix" or host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{num}"
        addresses = [(socket.AF_UNIX, path)]
        if sys.platform.startswith("linux"):  # xcb tries the abstract socket first
            addresses.insert(0, (socket.AF_UNIX, "\0" + path))
    else:
        addresses = [(socket.AF_INET, (host, 6000 + int(num)))]
    for family, address in addresses:
        try:
            if family == socket.AF_INET:
                socket.create_connection(address, timeout=timeout).close()
            else:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout)
                    s.connect(address)
            return True
        except OSError:
            continue
    return False


def no_gui_reason(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """``None`` when Qt can show widgets here, else why the GUI tests are skipped.

    - macOS and Windows need no X server.
    - ``QT_QPA_PLATFORM`` set to a platform that needs no display server (``offscreen``,
      ``minimal``, ``vnc``, ...) is the user's choice: the GUI tests run.
    - ``xcb`` (the default on Linux when ``QT_QPA_PLATFORM`` is unset) needs an X server that
      answers at ``DISPLAY``; ``wayland`` needs ``WAYLAND_DISPLAY``.
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform.startswith(("darwin", "win32")):
        return None
    wanted = [p.split(":")[0].strip().lower() for p in env.get("QT_QPA_PLATFORM", "").split(";")]
    wanted = [p for p in wanted if p] or ["xcb", "wayland"]
    for name in wanted:  # Qt tries a ';'-separated list in order
        if name == "xcb":
            if x_server_answers(env.get("DISPLAY", "")):
                return None
        elif name.startswith("wayland"):
            if env.get("WAYLAND_DISPLAY"):
                return None
        else:
            return None
    display = env.get("DISPLAY", "")
    if display:
        return f"no X server (nothing answers at DISPLAY={display}): install xvfb to run the GUI tests"
    return NO_X_SERVER
