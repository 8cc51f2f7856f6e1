"""Cellpose 4 (Cellpose-SAM) backend: predict with ``cpsam`` or any Cellpose model file, fine-tune.

Attributes are imported on first use, so reading the spec never imports torch or cellpose.
"""

from .._lazy import lazy_module

__getattr__, __dir__, __all__ = lazy_module(__name__, {
    "BACKEND": ("napari_dlbio.backends", "backend:cellpose"),
    "WEIGHTS": (".locate", "WEIGHTS"),
    "CellposeModel": (".model", "CellposeModel"),
    "CellposeNet": (".model", "CellposeModel"),
    "Predict": (".settings", "Predict"),
    "Settings": (".settings", "Settings"),
    "SPEC": (".spec", "SPEC"),
    "Arch": (".net", "Arch"),
    "MICRO": (".net", "MICRO"),
    "TINY": (".net", "TINY"),
    "VIT_L": (".net", "VIT_L"),
    "write_random_model": (".net", "write_random_model"),
})
