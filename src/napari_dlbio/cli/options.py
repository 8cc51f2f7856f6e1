"""Command-line options generated from a backend's pydantic settings, and read back.

Values stay strings in argparse and are parsed and validated by
:mod:`napari_dlbio.settings_fields`, so a bad value reads the same in the CLI
and the GUI.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import OWN_PREFIX


def add_settings_options(parser: argparse.ArgumentParser, model_cls, title: str, taken: set[str]) -> None:
    """One option per settings field, in a basic and an advanced group; ``taken`` options are skipped."""
    from ..settings_fields import fields

    basic = parser.add_argument_group(f"{title} settings")
    advanced = parser.add_argument_group(f"{title} advanced settings")
    for spec in fields(model_cls):
        if spec.option in taken:
            continue
        group = advanced if spec.advanced else basic
        kw: dict[str, Any] = {
            "dest": OWN_PREFIX + spec.dest,
            "default": argparse.SUPPRESS,  # only the options given override the defaults (or --from's)
            "help": spec.help(),
        }
        if spec.type is bool and spec.sequence is None:
            group.add_argument(spec.option, action=argparse.BooleanOptionalAction, **kw)
            continue
        if spec.choices is not None:
            kw["metavar"] = "{" + ",".join(map(str, spec.choices)) + "}"
        else:
            kw["metavar"] = spec.type.__name__.upper() if spec.sequence is None else "N,N"
        group.add_argument(spec.option, **kw)


def settings_from_args(args: argparse.Namespace, model_cls, base=None):
    """``model_cls`` validated from the generated options given, on top of ``base``."""
    from ..settings_fields import build, fields

    specs = {s.dest: s for s in fields(model_cls)}
    values = {}
    for key, raw in vars(args).items():
        if not key.startswith(OWN_PREFIX):
            continue
        spec = specs[key[len(OWN_PREFIX) :]]
        values[spec.name] = raw if isinstance(raw, bool) else spec.parse(raw)
    return build(model_cls, values, base)
