"""PyTorch U-Net backend (instance and semantic segmentation, 2D and 3D)."""

from .backend import BACKEND, Predict, Settings, UNetModel

__all__ = ["BACKEND", "Predict", "Settings", "UNetModel"]
