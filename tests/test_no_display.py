"""Without an X server the GUI tests are skipped with a reason instead of aborting the run."""

import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from _gui_display import NO_X_SERVER, no_gui_reason, x_server_answers

ROOT = Path(__file__).resolve().parents[1]


def _path_without_xvfb() -> str:
    keep = [
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not os.access(os.path.join(d, "Xvfb"), os.X_OK)
    ]
    return os.pathsep.join(keep)


def test_gui_tests_skip_without_x_server(tmp_path):
    env = dict(os.environ, PATH=_path_without_xvfb())
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER"):
        env.pop(var, None)
    junit = tmp_path / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "tests/_qt", "-p", "no:cacheprovider",
           f"--basetemp={tmp_path / 'basetemp'}", f"--junitxml={junit}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Fatal Python error" not in text
    assert NO_X_SERVER in text

    cases = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        skipped = case.find("skipped")
        cases[f"{case.get('classname')}::{case.get('name')}"] = (
            None if skipped is None else skipped.get("message")
        )
    docks = {k: v for k, v in cases.items() if ".test_docks::" in k}
    qtbot_forms = {k: v for k, v in cases.items() if ".test_forms::test_form" in k}
    assert docks and qtbot_forms
    assert set(docks.values()) == set(qtbot_forms.values()) == {NO_X_SERVER}
    # Tests that need no display still run.
    assert cases["tests._qt.test_forms::test_metrics_text"] is None
    manifest = [v for k, v in cases.items() if ".test_manifest::" in k]
    assert manifest and all(v is None for v in manifest)


def test_no_gui_reason_decision():
    linux = {"platform": "linux"}
    assert no_gui_reason({}, **linux) == NO_X_SERVER
    assert no_gui_reason({"QT_QPA_PLATFORM": "xcb"}, **linux) == NO_X_SERVER
    assert no_gui_reason({"QT_QPA_PLATFORM": "offscreen"}, **linux) is None
    assert no_gui_reason({"QT_QPA_PLATFORM": "minimal:enable_fonts"}, **linux) is None
    assert no_gui_reason({"WAYLAND_DISPLAY": "wayland-0"}, **linux) is None
    assert no_gui_reason({"QT_QPA_PLATFORM": "wayland"}, **linux) == NO_X_SERVER
    assert no_gui_reason({}, platform="darwin") is None and no_gui_reason({}, platform="win32") is None

    # A DISPLAY nobody listens on (a stale ssh -X or container setting) is no X server either.
    stale = no_gui_reason({"DISPLAY": ":54321"}, **linux)
    assert stale is not None and "DISPLAY=:54321" in stale and "install xvfb" in stale

    # A server listening on the display's socket counts (TCP form host:N -> port 6000 + N).
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        if port >= 6000:
            assert x_server_answers(f"127.0.0.1:{port - 6000}.0")
            assert no_gui_reason({"DISPLAY": f"127.0.0.1:{port - 6000}"}, **linux) is None

    if sys.platform.startswith("linux"):  # ":N" -> the (abstract) socket /tmp/.X11-unix/XN
        with socket.socket(socket.AF_UNIX) as srv:
            srv.bind("\0/tmp/.X11-unix/X54322")
            srv.listen()
            assert no_gui_reason({"DISPLAY": ":54322.0"}, **linux) is None
