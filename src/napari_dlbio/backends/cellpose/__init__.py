"""Cellpose 4 (Cellpose-SAM) backend: predict with ``cpsam`` or any Cellpose model file, fine-tune."""

from .backend import BACKEND, WEIGHTS, CellposeNet, Predict, Settings
from .net import MICRO, TINY, VIT_L, Arch, write_random_model

__all__ = [
    "BACKEND", "WEIGHTS", "Arch", "CellposeNet", "MICRO", "Predict", "Settings", "TINY", "VIT_L",
    "write_random_model",
]
