"""What a bioimage.io package of a StarDist model says: object probability and ray distances, and NMS."""

from __future__ import annotations

import copy
from pathlib import Path

from ...bioimageio_parts import Architecture, BioimageioParts, Normalization, Tensor

CITATIONS = (
    {"text": "Schmidt, Weigert, Broaddus, Myers. Cell Detection with Star-convex Polygons. MICCAI 2018",
     "doi": "10.1007/978-3-030-00934-2_30"},
    {"text": "Weigert, Schmidt, Haase, Sugawara, Myers. Star-convex Polyhedra for 3D Object Detection and "
             "Segmentation in Microscopy. WACV 2020", "doi": "10.1109/WACV45572.2020.9093435"},
)


def parts(model) -> BioimageioParts:
    a = model.arch
    norm = model.settings.normalization
    rays = [f"dist{k}" for k in range(a.n_rays)]
    grid = tuple(int(g) for g in a.grid)
    return BioimageioParts(
        network=copy.deepcopy(model.net).cpu().eval(),
        architecture=Architecture("stardist_net", a.as_dict(), source=Path(__file__).with_name("net.py")),
        normalization=Normalization("percentile" if norm.mode == "percentile" else "none", norm.low, norm.high,
                                    norm.per_channel),
        outputs=(Tensor("prob_dist", f"object probability (sigmoid), then the {a.n_rays} ray distances in pixels, "
                                     f"on a grid {'x'.join(map(str, grid))} times coarser than the input",
                        ("prob", *rays), scale=grid),),
        min_shape=tuple(a.multiple), step=tuple(a.multiple),
        method=f"StarDist {a.ndim}D ({a.n_rays} rays, grid {grid}): star-convex nuclei (napari-dlbio, PyTorch).",
        postprocessing=_postprocessing(model),
        citations=CITATIONS,
        tags=["segmentation", "instance-segmentation", "stardist", "nuclei"],
        extra={"stardist": {"thresholds": dict(model.thresholds), "grid": list(grid), "n_rays": a.n_rays}},
    )


def _postprocessing(model) -> str:
    t = model.thresholds
    shape = "polygon" if model.ndim == 2 else "polyhedron"
    return ("Objects come from StarDist's non-maximum suppression (napari-dlbio and the `stardist` package do "
            "this; bioimage.io cannot): every grid point whose probability exceeds "
            f"{t['prob']:g} proposes the star-convex {shape} given by its ray distances (scaled back by the grid); "
            f"proposals overlapping a more probable one by more than IoU {t['nms']:g} are dropped, and the rest "
            "are rendered as labels, most probable first. The thresholds were tuned on held-out images.")


def from_package(cls, rdf, folder: Path):
    """An official StarDist bioimage.io package (Keras HDF5 weights), converted like an official folder.

    StarDist's own exporter keeps the model's ``config.json`` and thresholds in the
    description's ``config.stardist``; they become the files the converter reads.
    """
    import json

    from ...bioimageio_import import description_config
    from ...store import ModelError

    sd = description_config(rdf).get("stardist")
    if not sd:
        raise ModelError(f"StarDist: {rdf.name} is not a StarDist model (no config.stardist in its description)")
    keras = getattr(rdf.weights, "keras_hdf5", None)
    if keras is None:
        raise ModelError(f"StarDist: {rdf.name} has no Keras HDF5 weights (only "
                         f"{', '.join(k for k, v in rdf.weights if v is not None)}), which cannot be converted")
    if not (folder / "config.json").is_file() and sd.get("config"):
        (folder / "config.json").write_text(json.dumps(sd["config"]))
    if not (folder / "thresholds.json").is_file() and sd.get("thresholds"):
        (folder / "thresholds.json").write_text(json.dumps(sd["thresholds"]))
    weights = folder / Path(str(keras.source)).name
    if weights.is_file() and weights.name != "weights_best.h5":
        weights.rename(folder / "weights_best.h5")
    model = cls.pretrained(str(folder))
    model.name = f"stardist:{rdf.name}"
    return model
