"""napari sample data: synthetic nuclei (2D, 3D) and, with stardist installed, its real 2D sample.

Names are short and store-safe ("nuclei2d"), so the default model name and the
output layer ``nuclei2d_<model>`` read well. The 3D volume carries its physical
Z step as ``scale`` so that results can be checked to keep it.
"""

from __future__ import annotations

from . import samples


def _pair(image, labels, name: str, scale=None) -> list[tuple]:
    geo = {"scale": list(scale)} if scale is not None else {}
    return [
        (image, {"name": name, "colormap": "gray", **geo}, "image"),
        (labels, {"name": f"{name}_gt", "opacity": 0.5, "visible": False, **geo}, "labels"),
    ]


def nuclei_2d() -> list[tuple]:
    """Nuclei 2D (synthetic): 256x256 image + ground-truth labels (hidden)."""
    return _pair(*samples.nuclei_2d(), "nuclei2d")


def nuclei_3d() -> list[tuple]:
    """Nuclei 3D (synthetic): 32x96x96 ZYX volume, Z step twice the pixel size."""
    return _pair(*samples.nuclei_3d(), "nuclei3d", scale=(2.0, 1.0, 1.0))


def stardist_nuclei_2d() -> list[tuple]:
    """Nuclei 2D (StarDist sample): a real DSB2018 image shipped with stardist, with its mask."""
    pair = samples.stardist_sample_2d()
    if pair is None:
        raise ImportError("this sample needs the stardist package: pip install 'napari-dlbio[stardist]'")
    return _pair(*pair, "stardist2d")
