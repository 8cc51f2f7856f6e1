"""What the docks and the command line say to people: times, metrics, errors.

One module for both, so a metric or an error reads the same in a notification
and in a terminal. Plain Python: no Qt, no torch.
"""

from __future__ import annotations

import math
from typing import Any

from .jobs import Cancelled, JobError
from .store import ModelError


class UserError(Exception):
    """A problem the user can fix (bad input, a missing file); its message says how."""


# Errors whose message is written for the user: shown as they are, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ModelError, Cancelled, ValueError, ImportError, FileNotFoundError, NotADirectoryError,
    PermissionError, OSError, KeyError, FloatingPointError, MemoryError,
)


def clock(seconds: float) -> str:
    """``0:07``, ``4:05``, ``1:02:03``: elapsed or remaining time."""
    seconds = max(0, int(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def duration(seconds: float) -> str:
    """``7 s``, ``4:05 min``: how long something took."""
    m, s = divmod(max(0, int(seconds)), 60)
    return f"{clock(seconds)} min" if m else f"{s} s"


def validation_error(exc: Any) -> str:
    """pydantic's multi-line error as one line: ``patch_size: Input should be >= 16; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid value")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid settings: " + "; ".join(parts)


def is_user_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    if isinstance(exc, JobError):
        return exc.user
    return isinstance(exc, (ValidationError, *USER_ERRORS))


def describe_error(exc: BaseException) -> str:
    """One line for a notification or the terminal; unexpected errors also name their type."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return validation_error(exc)
    if isinstance(exc, JobError):  # described where it happened (the job process)
        return str(exc)
    # str() of a KeyError is the key's repr ('name'): unquote that one only, since other
    # messages may end in a quoted value ("expected int, got 'abc'").
    raw = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(raw).split())
    if isinstance(exc, USER_ERRORS):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def metric_parts(m: dict) -> list[str]:
    """Validation figures as short phrases: ``AP@0.5 0.791``, ``F1 0.870``, ``PSNR 38.22 dB``."""
    out = []
    if "ap50" in m:
        out += [f"AP@0.5 {_num(m['ap50'])}", f"F1 {_num(m.get('f1'))}"]
    if "mean_iou" in m:
        per = m.get("iou_per_class") or []
        detail = f" (per class {', '.join(f'{k}: {_num(v, 2)}' for k, v in enumerate(per))})" if per else ""
        out.append(f"mean IoU {_num(m['mean_iou'])}{detail}")
    if "psnr" in m:
        out.append(f"PSNR {_num(m['psnr'], 2)} dB")
    if "n2v_val_loss" in m:
        out.append(f"masked N2V loss {_num(m['n2v_val_loss'], 4)} (lower is better)")
    if "pair_val_loss" in m:
        out.append(f"loss on held-out pairs {_num(m['pair_val_loss'], 4)} (lower is better)")
    return out


def metrics_line(m: dict) -> str:
    """One line for the terminal: ``AP@0.5 0.791 F1 0.870 (15 validation item(s))``."""
    parts = metric_parts(m)
    if parts and "n_val" in m:
        parts.append(f"({m['n_val']} validation item(s))")
    return " ".join(parts)


def training_lines(m: dict) -> list[str]:
    """How training went, from ``metrics["training"]`` (epochs, time, stop reason, best epoch)."""
    t = m.get("training") or {}
    if not t:
        return []
    validated = bool(metric_parts(m))
    return [
        f"{t.get('epochs', '?')} epochs in {duration(float(t.get('seconds', 0)))}, {t.get('stopped', '')}",
        f"kept epoch {t.get('best_epoch', '?')} (lowest {'validation' if validated else 'training'} loss "
        f"{_num(t.get('best_loss'), 4)})",
    ]


def metrics_html(m: dict) -> str:
    """Validation metrics and the training summary as short lines for a dock (rich text)."""
    parts = metric_parts(m)
    lines = [f"<b>validation</b>: {' · '.join(parts)}"] if parts else [
        "no validation data held out (one small image): no metrics"]
    return "<br>".join(lines + training_lines(m))
