"""Between napari layers and the job runner, without Qt.

The docks read a layer into a :class:`LayerSnapshot` (array, axes, scale,
translate) on the UI thread, hand arrays to :mod:`napari_dlbio.tasks` in a worker,
and turn the results back into napari ``LayerDataTuple``s here. Keeping this
Qt-free lets the geometry and naming rules be tested without a viewer.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .axes import ItemPlan, guess_axes, validate_axes
from .objects import SHAPES, features

PROVENANCE_KEY = "napari_dlbio"


@dataclass
class LayerSnapshot:
    """What a job needs from an image layer, taken on the UI thread."""

    name: str
    data: Any                      # numpy / dask / zarr array (level 0 of a multiscale layer)
    axes: str                      # over T Z C Y X, in the data's order
    scale: tuple[float, ...]       # one entry per layer dimension (no C entry for RGB)
    translate: tuple[float, ...]
    rgb: bool = False
    source_path: str | None = None  # the layer's file, for lazy data (a job may read it directly)

    @classmethod
    def from_array(cls, name: str, data: Any, axes: str | None = None, rgb: bool = False) -> LayerSnapshot:
        """An array with unit scale and no offset, as if it were a layer (scripts and tests)."""
        shape = tuple(data.shape)
        axes = validate_axes((axes or "").strip().upper() or guess_axes(shape, rgb=rgb), shape)
        n = len(shape) - (1 if rgb else 0)
        return cls(name, data, axes, (1.0,) * n, (0.0,) * n, rgb)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    def geometry(self) -> dict[str, tuple[float, float]]:
        """Axis letter -> (scale, translate) of the source layer."""
        letters = self.axes.replace("C", "") if self.rgb else self.axes
        return {a: (float(s), float(t)) for a, s, t in zip(letters, self.scale, self.translate)}


def layer_data(layer) -> Any:
    """The full-resolution array of a layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def guess_layer_axes(layer) -> str:
    data = layer_data(layer)
    try:
        return guess_axes(data.shape, rgb=bool(getattr(layer, "rgb", False)))
    except ValueError:
        return ""


def snapshot(layer, axes: str | None = None) -> LayerSnapshot:
    """Read an image layer; ``axes`` overrides the guess (a clear ValueError if it does not fit)."""
    data = layer_data(layer)
    rgb = bool(getattr(layer, "rgb", False))
    axes = (axes or "").strip().upper() or guess_axes(data.shape, rgb=rgb)
    axes = validate_axes(axes, data.shape)
    if rgb and not axes.endswith("C"):
        raise ValueError(f"layer {layer.name!r} is RGB: its axes must end with C, not {axes!r}")
    path = layer.source.path if not isinstance(data, np.ndarray) else None
    return LayerSnapshot(
        layer.name, data, axes, tuple(map(float, layer.scale)), tuple(map(float, layer.translate)), rgb,
        str(path) if path else None,
    )


def parse_channels(text: str) -> tuple[int, ...] | None:
    """``""``/``"all"`` -> None (all channels); ``"0, 2"`` -> (0, 2)."""
    text = (text or "").strip().lower()
    if text in ("", "all"):
        return None
    try:
        chans = tuple(int(t) for t in re.split(r"[,\s]+", text) if t)
    except ValueError:
        raise ValueError(f"channels must be 'all' or numbers like '0, 2', not {text!r}") from None
    if not chans:
        return None
    return chans


def safe_model_name(text: str) -> str:
    """A store-safe model name from free text (layer names hold spaces, brackets...)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._-")
    return (name or "model")[:100]


def unique_name(base: str, existing: Iterable[str]) -> str:
    """``base`` or ``base [2]``, ``base [3]``... so a user's layer is never replaced."""
    taken = set(existing)
    if base not in taken:
        return base
    k = 2
    while f"{base} [{k}]" in taken:
        k += 1
    return f"{base} [{k}]"


def geometry_for(src: LayerSnapshot, out_axes: str) -> tuple[list[float], list[float]]:
    """Scale and translate for an output with ``out_axes``; an axis the source lacks gets 1/0."""
    geo = src.geometry()
    scale = [geo.get(a, (1.0, 0.0))[0] for a in out_axes]
    translate = [geo.get(a, (1.0, 0.0))[1] for a in out_axes]
    return scale, translate


def _layer_suffix(backend: str | None) -> str | None:
    """A backend's fixed name for its outputs (Noise2Void: ``<image>_n2v``), if it has one."""
    if not backend:
        return None
    from . import backends

    if backend not in backends.specs():
        return None
    return backends.spec(backend).layer_suffix


def provenance(model, src: LayerSnapshot, settings=None, extra: dict | None = None) -> dict[str, Any]:
    """Where a result came from, for ``layer.metadata`` (plain JSON-able values).

    ``model``: a :class:`~napari_dlbio.requests.ModelRef` (backend, name, path).
    """
    out = {
        "model": model.name,
        "backend": model.backend,
        "model_path": model.path,
        "layer_suffix": model.suffix,
        "source_layer": src.name,
        "axes": src.axes,
        "settings": settings.model_dump(mode="json") if settings is not None else {},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    out.update(extra or {})
    return out


def prediction_layers(
    prediction,
    src: LayerSnapshot,
    prov: dict[str, Any],
    extras: bool = False,
    existing: Iterable[str] = (),
) -> list[tuple]:
    """LayerDataTuples for one image's prediction: ``<image>_<model>`` plus optional extras.

    Labels become an int32 labels layer; images (denoised output, probabilities)
    image layers. Each keeps the source's scale and translate for its own axes.
    """
    taken = set(existing)
    base = f"{src.name}_{prov.get('layer_suffix') or _layer_suffix(prov.get('backend')) or prediction.model}"
    out = []
    for key, arr in prediction.outputs.items():
        main = key in ("labels", "image")
        if not (main or extras or key == SHAPES):  # polygons are asked for by their own setting
            continue
        axes = prediction.axes[key]
        name = unique_name(base if main else f"{base}_{key}", taken)
        taken.add(name)
        scale, translate = geometry_for(src, axes)
        meta = {"name": name, "scale": scale, "translate": translate,
                "metadata": {PROVENANCE_KEY: {**prov, "output": key, "axes": axes}}}
        if key == SHAPES:
            # Outlines (StarDist polygons) in the labels' axes, drawn as polygons over them.
            meta.update(shape_type="polygon", edge_color="yellow", face_color="transparent", edge_width=1)
            out.append((list(arr), meta, "shapes"))
        elif key == "labels":
            if prediction.objects is not None and _unique(prediction.objects["label"]):
                # napari's tooltip and table widgets show them; the Review dock sorts by score.
                meta["features"] = features(prediction.objects)
            out.append((np.asarray(arr).astype(np.int32, copy=False), meta, "labels"))
        else:
            meta["blending"] = "additive" if not main else "translucent"
            if not main:
                meta["colormap"] = "magma"
            out.append((arr, meta, "image"))
    return out


def _unique(ids) -> bool:
    """Whether ids name one object each (not so for stacks predicted without unique labels)."""
    return len(np.unique(ids)) == len(ids)


# --- training-data summary ---------------------------------------------------------
@dataclass
class AnnotationSummary:
    loop_axes: str                     # the axes that count items ("Z", "T", "TZ" or "")
    annotated: list[tuple[int, ...]] = field(default_factory=list)
    n_items: int = 1
    n_objects: int = 0

    def text(self, max_listed: int = 12) -> str:
        if not self.annotated:
            what = "slice" if self.loop_axes else "image"
            return f"annotated: none — paint at least one object in a {what} to train on it"
        n = len(self.annotated)
        objects = f"{self.n_objects} object{'s' if self.n_objects != 1 else ''}"
        if not self.loop_axes:
            return f"annotated: whole image ({objects})"
        unit = "frames" if self.loop_axes == "T" else "slices"
        if len(self.loop_axes) == 1:
            where = ", ".join(str(i[0]) for i in self.annotated[:max_listed])
            where = f"{self.loop_axes.lower()}={where}"
        else:
            where = "; ".join(
                ",".join(f"{a.lower()}={v}" for a, v in zip(self.loop_axes, i)) for i in self.annotated[:max_listed]
            )
        if n > max_listed:
            where += ", …"
        return f"annotated: {where} ({n} of {self.n_items} {unit}, {objects})"


def annotation_summary(
    labels, image_axes: str, ndim: int = 2, region: np.ndarray | None = None
) -> AnnotationSummary:
    """Which items (slices/frames, or volumes for 3D models) of ``labels`` hold annotations.

    ``labels`` has the image's shape without C; ``image_axes`` are the image's axes.
    The items and counts are those training will use (:func:`napari_dlbio.data.annotated_items`).
    """
    from .data import annotated_items

    label_axes = validate_axes(image_axes.upper().replace("C", ""), tuple(labels.shape))
    plan = ItemPlan(label_axes, tuple(labels.shape), ndim)
    summary = AnnotationSummary(plan.loop_axes, n_items=plan.n_items)
    for idx, _, _, n_objects in annotated_items(labels, plan, region):
        summary.annotated.append(tuple(int(i) for i in idx))
        summary.n_objects += n_objects
    return summary


# --- regions from a shapes layer -----------------------------------------------------
def region_mask(shapes_layer, reference, shape: Sequence[int]) -> np.ndarray:
    """Rasterise a shapes layer onto the grid of ``reference`` (the labels layer).

    Shapes live in their own layer's coordinates; they are mapped through world
    coordinates into the reference's data coordinates first, so a region drawn on
    an image with a physical scale lands on the right pixels. Shapes drawn in 2D
    on a stack cover every slice.
    """
    from napari.layers import Shapes

    if len(shapes_layer.data) == 0:
        raise ValueError(f"shapes layer {shapes_layer.name!r} holds no shape to use as region")
    s_scale = np.asarray(shapes_layer.scale, float)
    s_trans = np.asarray(shapes_layer.translate, float)
    r_scale = np.asarray(reference.scale, float)[-shapes_layer.ndim:]
    r_trans = np.asarray(reference.translate, float)[-shapes_layer.ndim:]
    if shapes_layer.ndim > len(shape):
        raise ValueError(f"shapes layer {shapes_layer.name!r} has more dimensions than the labels")
    mapped = [((np.asarray(v) * s_scale + s_trans) - r_trans) / r_scale for v in shapes_layer.data]
    sub_shape = tuple(shape[-shapes_layer.ndim:])
    tmp = Shapes(mapped, shape_type=list(shapes_layer.shape_type), ndim=shapes_layer.ndim)
    # 2D shapes on a stack give a 2D mask: data.from_arrays uses it for every slice.
    return tmp.to_masks(mask_shape=sub_shape).any(axis=0)
