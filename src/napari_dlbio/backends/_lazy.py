"""Lazy package attributes (PEP 562), so a backend package imports its heavy parts on first use."""

from __future__ import annotations

import importlib


def lazy_module(package: str, attrs: dict[str, tuple[str, str]]):
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    ``attrs`` maps a name to ``(module, attribute)``; a relative module is resolved
    against ``package``. ``("napari_dlbio.backends", "backend:NAME")`` is the
    registry's :class:`~napari_dlbio.backends.base.Backend` of that name.
    """

    def __getattr__(name: str):
        try:
            module, attr = attrs[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        mod = importlib.import_module(module, package)
        if attr.startswith("backend:"):
            return mod.get(attr.split(":", 1)[1])
        return getattr(mod, attr)

    def __dir__() -> list[str]:
        return sorted(attrs)

    return __getattr__, __dir__, sorted(attrs)
