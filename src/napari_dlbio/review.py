"""The Review panel's logic, without Qt: our result layers' objects by score; delete, hide, clean.

A result labels layer carries its objects in ``layer.features`` (``index`` = label id,
``label``, ``score``, ``area``, ``centroid_<axis>``: see :mod:`napari_dlbio.objects`).
Edits touch only layers with our provenance (``layer.metadata[PROVENANCE_KEY]``):
a user's own labels are never changed. Hiding low scores is a colormap, not an
edit: the layer's data stays as it is until the user asks for a cleaned copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._layers import PROVENANCE_KEY

SCORE, KEPT = "score", "kept"


@dataclass(frozen=True)
class Row:
    label: int
    score: float
    area: int
    kept: bool


def has_scores(layer) -> bool:
    """A labels layer whose features hold a per-object score."""
    return type(layer).__name__ == "Labels" and SCORE in getattr(layer.features, "columns", ())


def is_ours(layer) -> bool:
    return PROVENANCE_KEY in layer.metadata


def check_ours(layer) -> None:
    """A clear error for a layer that is not one of our results (the user's own labels)."""
    if not is_ours(layer):
        raise ValueError(f"{layer.name!r} is not a napari-dlbio result: its labels are yours and are not "
                         "edited here; review a result layer of the Predict dock")


def rows(layer) -> list[Row]:
    """The layer's objects, lowest score first (ties by label)."""
    f = layer.features
    if SCORE not in f.columns or len(f) == 0:
        return []
    labels = np.asarray(f["label"] if "label" in f.columns else f["index"], np.int64)
    scores = np.asarray(f[SCORE], float)
    areas = np.asarray(f["area"], np.int64) if "area" in f.columns else np.zeros(len(f), np.int64)
    kept = np.asarray(f[KEPT], bool) if KEPT in f.columns else np.zeros(len(f), bool)
    order = np.lexsort((labels, scores))
    return [Row(int(labels[i]), float(scores[i]), int(areas[i]), bool(kept[i])) for i in order]


def centroid(layer, label: int) -> np.ndarray:
    """The object's centroid in the layer's data coordinates (from its features, else measured)."""
    f = layer.features
    cols = [c for c in f.columns if str(c).startswith("centroid_")]
    hit = np.flatnonzero(np.asarray(f["label"]) == label) if "label" in f.columns else []
    if len(cols) == layer.ndim and len(hit):
        return np.asarray([float(f[c].iloc[hit[0]]) for c in cols])
    where = np.argwhere(np.asarray(layer.data) == label)
    if not len(where):
        raise ValueError(f"label {label} is not in {layer.name!r}")
    return where.mean(axis=0)


def jump(viewer, layer, label: int) -> np.ndarray:
    """Centre the view on object ``label`` (its slice/frame on the other axes); select it.

    Returns the centroid in world coordinates.
    """
    world = np.asarray(layer.data_to_world(centroid(layer, label)), float)
    first = viewer.dims.ndim - len(world)   # the layer's axes are the viewer's last ones
    displayed = list(viewer.dims.displayed)
    for d, value in enumerate(world):
        if first + d not in displayed:
            viewer.dims.set_point(first + d, value)
    viewer.camera.center = tuple(world[[d - first for d in displayed if d >= first]])
    layer.selected_label = int(label)
    return world


def delete(layer, labels) -> int:
    """Set objects ``labels`` to background in OUR result layer, drop their rows; pixels changed."""
    check_ours(layer)
    labels = np.atleast_1d(np.asarray(labels, np.int64))
    data = layer.data
    mask = np.isin(data, labels)
    n = int(mask.sum())
    data[mask] = 0
    layer.refresh()
    f = layer.features
    layer.features = f[~np.isin(np.asarray(f["label"]), labels)].reset_index(drop=True)
    return n


def keep(layer, label: int, kept: bool = True) -> None:
    """Mark an object as checked by the user: thresholds never hide or remove it."""
    check_ours(layer)
    f = layer.features.copy()
    if KEPT not in f.columns:
        f[KEPT] = False
    f.loc[np.asarray(f["label"]) == label, KEPT] = kept
    layer.features = f


def below(layer, threshold: float) -> np.ndarray:
    """Ids of the objects under ``threshold`` that the user has not kept."""
    f = layer.features
    if SCORE not in f.columns:
        return np.zeros(0, np.int64)
    low = np.asarray(f[SCORE], float) < threshold
    if KEPT in f.columns:
        low &= ~np.asarray(f[KEPT], bool)
    return np.asarray(f["label"], np.int64)[low]


def hiding_colormap(layer, base, threshold: float, show: int | None = None):
    """``base`` (the layer's own colors) with the objects under ``threshold`` transparent.

    A ``DirectLabelColormap`` over the table's ids: the data are not touched. Object
    ``show`` (the one under review) stays visible whatever its score.
    """
    from napari.utils.colormaps import DirectLabelColormap

    ids = np.asarray(layer.features["label"], np.int64)
    colors = np.asarray(base.map(ids), np.float32).reshape(len(ids), 4)
    colors[np.isin(ids, below(layer, threshold)) & (ids != (show if show is not None else -1)), 3] = 0.0
    # None: ids without a row (painted since); 0: the background.
    color_dict: dict[Any, Any] = {None: np.array([1, 1, 1, 0.6], np.float32), 0: np.zeros(4, np.float32)}
    color_dict.update({int(i): c for i, c in zip(ids, colors)})
    return DirectLabelColormap(color_dict=color_dict)


def cleaned(layer, threshold: float) -> tuple[np.ndarray, dict, str]:
    """A LayerDataTuple ``<name> (cleaned)``: a copy without the objects under ``threshold``."""
    drop = below(layer, threshold)
    data = np.array(layer.data, copy=True)
    data[np.isin(data, drop)] = 0
    f = layer.features
    features = f[~np.isin(np.asarray(f["label"]), drop)].reset_index(drop=True)
    prov = dict(layer.metadata.get(PROVENANCE_KEY, {}))
    prov["cleaned"] = {"from": layer.name, "min_score": float(threshold), "removed": int(len(drop))}
    meta = {"name": f"{layer.name} (cleaned)", "scale": list(layer.scale), "translate": list(layer.translate),
            "features": features, "metadata": {**layer.metadata, PROVENANCE_KEY: prov}}
    return data, meta, "labels"
