"""A job's progress in napari's activity dock (``napari.utils.progress``), updated cheaply.

Each value or description change of a napari progress bar makes its Qt bar call
``QApplication.processEvents()`` (napari's ``QtLabeledProgressBar``): a flush of
the window and, from inside the caller, a run of whatever else is queued.
:class:`ActivityBar` therefore passes on only what changed (the integer value
0..1000, the text). Whoever wires it into a dock should call ``update`` last in
a delivery, after the dock's own widgets, so that napari's flush is the one the
dock needed anyway, and mind that queued slots may run inside the call.

Measured with benchmarks/bench_ui_update.py (Xvfb, 2 cores): an update costs
well under a millisecond while napari's activity popup is closed, a few window
compositions (tens of ms) while it is open. And while *any* napari progress
exists, napari animates an "in progress" GIF in its status bar (33 frames a
second, one window composition each): in software rendering that alone keeps
the UI thread about half busy.

Use it on the UI thread only, like every widget.
"""

from __future__ import annotations

_TOTAL = 1000
# The activity dock's label does not elide: a long message would widen the whole popup.
_MAX_MESSAGE = 28


class ActivityBar:
    """One job's bar in napari's activity dock: ``update(fraction, message)``, then ``close()``.

    ``fraction`` None (the job cannot say how far it is) keeps the bar where it
    is rather than making it "busy": napari's busy bar animates, which repaints
    the window continuously for as long as it is shown.
    """

    def __init__(self, desc: str) -> None:
        from napari.utils import progress

        self.desc = desc
        self.value = 0
        self.message = ""
        self._bar = progress(total=_TOTAL, desc=desc)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def update(self, fraction: float | None, message: str = "") -> None:
        """Show ``fraction`` (0..1, or None) and ``message``; a no-op when neither changed."""
        if self._closed:
            return
        if fraction is not None:
            value = int(_TOTAL * min(1.0, max(0.0, fraction)))
            if value != self.value:
                # tqdm counts up by increments; a negative one moves the bar back.
                self._bar.update(value - self.value)
                self.value = value
        # napari's bar ran the event loop just now: the job may have ended (closed) meanwhile.
        if message != self.message and not self._closed:
            self.message = message
            self._bar.set_description(_description(self.desc, message))

    def close(self) -> None:
        """Remove the bar from the activity dock; later calls (and updates) do nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._bar.close()
        except (KeyError, RuntimeError):
            pass  # napari dropped it already (the viewer, or its Qt bar, was closed first)


def _description(desc: str, message: str) -> str:
    if not message:
        return desc
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return f"{desc} · {message}"
