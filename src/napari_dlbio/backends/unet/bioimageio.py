"""What a bioimage.io package of a U-Net says: softmax class probabilities and how labels follow."""

from __future__ import annotations

import copy
from pathlib import Path

from ...bioimageio_parts import Architecture, BioimageioParts, Normalization, Tensor
from ...blocks import unet_radius
from .settings import n_outputs

CITATIONS = (
    {"text": "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
             "MICCAI 2015", "doi": "10.1007/978-3-319-24574-4_28"},
    {"text": "Çiçek et al. 3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation. MICCAI 2016",
     "doi": "10.1007/978-3-319-46723-8_49"},
)


def parts(model) -> BioimageioParts:
    s = model.settings
    kwargs = {"ndim": model.ndim, "in_channels": model.n_channels, "out_channels": n_outputs(s),
              "depth": s.depth, "base_width": s.base_width, "batch_norm": s.batch_norm, "dropout": s.dropout,
              "softmax": True}
    net = copy.deepcopy(model.net).cpu().eval()
    net.softmax = True
    m = 2**s.depth
    halo = min(unet_radius(s.depth), 4 * m) // m * m   # what a tiling consumer should crop per side
    smallest = -(-(2 * halo + m) // m) * m               # a tile must be larger than its two halos
    norm = s.normalization
    return BioimageioParts(
        network=net,
        architecture=Architecture("UNet", kwargs, source=Path(__file__).with_name("net.py")),
        normalization=Normalization("percentile" if norm.mode == "percentile" else "none", norm.low, norm.high,
                                    norm.per_channel),
        outputs=(Tensor("probabilities", "class probabilities (softmax over the channel axis)", _classes(model),
                        halo=halo),),
        min_shape=(smallest,) * model.ndim, step=(m,) * model.ndim,
        method=_method(model),
        postprocessing=_postprocessing(model),
        citations=CITATIONS,
        tags=["segmentation", "u-net", "semantic-segmentation" if model.semantic else "instance-segmentation"],
    )


def _classes(model) -> tuple[str, ...]:
    if not model.semantic:
        return ("background", "interior", "boundary")
    first = 1 if model.settings.scribbles else 0
    return tuple(f"class{first + k}" for k in range(n_outputs(model.settings)))


def _method(model) -> str:
    if model.semantic:
        return f"{model.ndim}D U-Net for semantic segmentation into {n_outputs(model.settings)} classes (napari-dlbio)."
    return f"{model.ndim}D U-Net for instance segmentation (nuclei/cells): background, interior, boundary (napari-dlbio)."


def _postprocessing(model) -> str:
    s = model.settings
    if model.semantic:
        first = 1 if s.scribbles else 0
        return (f"Labels are the argmax over the channel axis{f' plus {first}' if first else ''}: "
                "one label value per class.")
    return ("Objects come from a seeded watershed (napari-dlbio does this; bioimage.io cannot): seeds are the "
            f"connected regions where the interior probability exceeds {s.seed_threshold:g}, the watershed floods "
            f"1 - interior probability within the foreground (1 - background probability > "
            f"{s.foreground_threshold:g}); foreground regions without a seed stay objects of their own; objects smaller "
            "than the Predict setting `min_size` are removed. "
            "The thresholds were tuned on held-out images after training.")
