"""Image files larger than memory: OME-Zarr (NGFF 0.4/0.5), plain zarr and TIFF/BigTIFF inputs.

:func:`open_image` opens any input lazily and says what its metadata knows (axes,
pixel size, offset); :class:`ImageSource` is the picklable recipe a worker process
uses to open the same pixels again. NGFF metadata is read and validated by the
``ome-zarr`` library (``OMEZarrMultiscale.from_ome_zarr``, pydantic models of each
version), not by a parser of our own. Writing outputs lives in :mod:`.outputs`;
:func:`output_factory` is re-exported here so callers have one module for formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .output_layout import (  # noqa: F401 - the formats API in one place
    FORMATS,
    check_writable,
    default_chunks,
    default_format,
    is_disk_full,
    is_finished,
    output_path,
    stem,
)
from .outputs import output_factory  # noqa: F401

Kind = Literal["tiff", "zarr", "ome-zarr", "image"]
READ_VERSIONS = ("0.4", "0.5")
_NGFF_LETTERS = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def is_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a zarr store or node (v2 or v3), i.e. one input, not a folder of files."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in ("zarr.json", ".zgroup", ".zarray"))


@dataclass(frozen=True)
class ImageSource:
    """How to open an input again, in this process or a dask worker: plain, picklable data.

    ``dataset`` is the array inside a zarr store (``"0"`` for an NGFF image's level 0);
    for TIFFs it is empty (the first series, level 0).
    """

    path: str
    kind: Kind
    dataset: str = ""

    def open(self) -> Any:
        """The pixels as a lazy array (zarr array / memory map) that reads only what is sliced."""
        if self.kind in ("zarr", "ome-zarr"):
            import zarr

            return zarr.open_array(self.path, path=self.dataset or None, mode="r")
        if self.kind == "tiff":
            return _open_tiff_pixels(self.path)
        from .data import read_image

        return read_image(self.path)  # PNG/JPEG: small by nature, read whole


@dataclass
class OpenedImage:
    """An opened input. ``axes`` is None when the file does not say (the caller guesses);
    ``scale``/``translate`` are per axis of ``array`` (napari's convention), None when unknown;
    ``note`` is what the caller should tell the user about how it was read."""

    array: Any
    source: ImageSource
    axes: str | None = None
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    units: dict[str, str] = field(default_factory=dict)
    rgb: bool = False
    ngff_version: str | None = None
    note: str = ""

    def close(self) -> None:
        store = getattr(getattr(self.array, "store", None), "close", None)
        self.array = None
        if callable(store):
            store()  # a TIFF read through tifffile's zarr store holds the file open

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_image(path: str | Path) -> OpenedImage:
    """Open an OME-Zarr image, a zarr array or a TIFF/PNG/JPEG file without reading its pixels.

    Raises ValueError naming the path for anything else, for NGFF versions other than
    0.4/0.5 and for zarr groups that hold no single image.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if not is_zarr(p):
            raise ValueError(f"{p} is a folder but not a zarr store (no zarr.json, .zgroup or .zarray); "
                             "inputs are TIFF/PNG/JPEG files, OME-Zarr or zarr stores")
        return _open_zarr(p)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _open_tiff(p)
    if suffix in (".png", ".jpg", ".jpeg"):
        return _open_plain_file(p)
    raise ValueError(f"{p} is neither a TIFF/PNG/JPEG file nor an OME-Zarr/zarr folder")


@dataclass
class OutputLayer:
    """One output of a finished store, ready for a napari layer: ``data`` is its pyramid
    (level 0 first, lazy zarr arrays); ``scale``/``translate`` are level 0's."""

    name: str
    kind: Literal["labels", "image"]
    data: list
    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]


def open_output(path: str | Path) -> list[OutputLayer]:
    """The outputs of a store written by :func:`output_factory` (zarr or OME-Zarr), lazily."""
    import zarr

    from .output_layout import is_labels

    p = Path(path)
    info = zarr.open_group(str(p), mode="r").attrs.get("napari-dlbio")
    if not isinstance(info, dict) or "outputs" not in info:
        raise ValueError(f"{p} is not an output store of napari-dlbio (no finished outputs recorded)")
    layers = []
    for name, out in info["outputs"].items():
        node = zarr.open(str(p / out["path"]) if out["path"] else str(p), mode="r")
        if out.get("ngff"):
            meta = _ngff_metadata(p / out["path"], node)
            data = [node[d.path] for d in meta.datasets]
            scale, translate = _world_transform(meta, len(out["axes"]))
        else:
            data = [node]
            scale = tuple(info.get("scale", {}).get(name, [1.0] * node.ndim))
            translate = tuple(info.get("translate", {}).get(name, [0.0] * node.ndim))
        kind = "labels" if is_labels(data[0].dtype) else "image"
        layers.append(OutputLayer(name, kind, data, out["axes"], scale, translate))
    return layers


# --- zarr and OME-Zarr -----------------------------------------------------------------------
def _open_zarr(p: Path) -> OpenedImage:
    import zarr

    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:  # noqa: BLE001 - any zarr error means an unreadable store
        raise ValueError(f"cannot read the zarr store {p}: {exc}") from None
    if isinstance(node, zarr.Array):
        return _plain_zarr(p, node, "")
    series = _bioformats2raw_series(node)
    group, prefix = (node[series], f"{series}/") if series else (node, "")
    version = _ngff_version(group)
    if version is None:
        return _plain_group(p, node)
    if version not in READ_VERSIONS:
        raise ValueError(f"{p} is OME-Zarr (NGFF) {version}; napari-dlbio reads NGFF "
                         f"{' and '.join(READ_VERSIONS)} (convert it, e.g. with ome2024-ngff-challenge "
                         "or bioformats2raw)")
    opened = _ngff_image(p, group, version, prefix)
    if series:
        opened.note = f"{p.name}: bioformats2raw layout, reading its first image (series {series})"
    return opened


def _ngff_version(group) -> str | None:
    """The NGFF version of an image group (``ome.version`` in 0.5, ``multiscales[0].version``
    before), None when the group has no multiscales. Read here only to refuse versions we do
    not read before validating; the metadata itself is read by ome-zarr."""
    attrs = group.attrs.asdict()
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    multiscales = ome.get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        return None
    if "version" in ome:
        return str(ome["version"])
    return str(multiscales[0].get("version", "unknown")) if isinstance(multiscales, list) else "unknown"


def _bioformats2raw_series(group) -> str:
    """``"0"`` for a bioformats2raw store (images in numbered sub-groups), else ``""``."""
    attrs = group.attrs.asdict()
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    layout = "bioformats2raw.layout" in attrs or "bioformats2raw.layout" in ome
    return "0" if layout and "0" in group else ""


def _ngff_image(p: Path, group, version: str, prefix: str) -> OpenedImage:
    """Level 0 of an NGFF image with its axes, pixel size and offset (validated by ome-zarr)."""
    meta = _ngff_metadata(p, group, version)
    names = [str(a.name).lower() for a in meta.axes]
    bad = [n for n in names if n not in _NGFF_LETTERS]
    if bad:
        raise ValueError(f"{p}: axes {names} include {bad}; napari-dlbio reads the axes t, c, z, y, x")
    axes = "".join(_NGFF_LETTERS[n] for n in names)
    scale, translate = _world_transform(meta, len(axes))
    units = {_NGFF_LETTERS[str(a.name).lower()]: str(a.unit) for a in meta.axes if a.unit}
    dataset = meta.datasets[0].path
    src = ImageSource(str(p), "ome-zarr", prefix + dataset)
    return OpenedImage(src.open(), src, axes, scale, translate, units, False, version)


def _ngff_metadata(p: Path, group, version: str = ""):
    """The multiscale metadata of an image group, validated by ome-zarr (pydantic models)."""
    from ome_zarr import OMEZarrMultiscale

    try:
        return OMEZarrMultiscale.from_ome_zarr(group).metadata
    except Exception as exc:  # noqa: BLE001 - pydantic/zarr errors: the metadata is not valid NGFF
        why = " ".join(str(exc).split())[:300]
        raise ValueError(f"{p}: invalid OME-Zarr {version} metadata: {why}".replace("  ", " ")) from None


def _world_transform(meta, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Level 0's pixel size and offset: its own transforms, then the multiscale-wide ones."""
    scale, translate = [1.0] * ndim, [0.0] * ndim
    for transforms in (meta.datasets[0].coordinateTransformations, meta.coordinateTransformations or ()):
        for t in transforms:
            if t.type == "scale" and hasattr(t, "scale"):
                scale = [s * f for s, f in zip(scale, t.scale)]
                translate = [o * f for o, f in zip(translate, t.scale)]
            elif t.type == "translation" and hasattr(t, "translation"):
                translate = [o + d for o, d in zip(translate, t.translation)]
    return tuple(float(s) for s in scale), tuple(float(t) for t in translate)


def _plain_group(p: Path, group) -> OpenedImage:
    """A zarr group without NGFF metadata: its only array, else an error naming them."""
    arrays = sorted(name for name, _ in group.arrays())
    if len(arrays) != 1:
        listed, example = ", ".join(arrays[:8]) or "none", p / (arrays or ["NAME"])[0]
        raise ValueError(f"{p} is a zarr group without OME-Zarr (NGFF) metadata and holds "
                         f"{len(arrays)} arrays ({listed}); give the array's path, e.g. {example}")
    return _plain_zarr(p, group[arrays[0]], arrays[0])


def _plain_zarr(p: Path, array, dataset: str) -> OpenedImage:
    """A zarr array: axes from its dimension names (zarr v3, xarray's v2 attribute) when they
    are our letters, else left to the caller to guess."""
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    axes = None
    if names and all(isinstance(n, str) and n.lower() in _NGFF_LETTERS for n in names):
        axes = "".join(_NGFF_LETTERS[n.lower()] for n in names)
        if len(set(axes)) != len(axes):
            axes = None
    how = (f"axes {axes} from its dimension names" if axes
           else "axes guessed as for TIFFs (set --axes to choose)")
    note = f"{p.name}: a zarr array without OME-Zarr (NGFF) metadata; {how}"
    return OpenedImage(array, ImageSource(str(p), "zarr", dataset), axes, note=note)


# --- TIFF and other files ----------------------------------------------------------------------
def _open_tiff(p: Path) -> OpenedImage:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series_axes = tif.series[0].axes
            shape = tif.series[0].shape
    except Exception as exc:  # noqa: BLE001 - any decoder error means an unreadable file
        raise ValueError(f"cannot read {p}: {exc}") from None
    src = ImageSource(str(p), "tiff")
    rgb = series_axes.endswith("S") and shape[-1] in (3, 4)
    return OpenedImage(src.open(), src, _tiff_axes(series_axes), rgb=rgb)


def _open_tiff_pixels(path: str) -> Any:
    """Uncompressed TIFFs memory-mapped, others read chunk-wise through tifffile's zarr store."""
    import tifffile

    try:
        return tifffile.memmap(path, mode="r")
    except Exception:  # noqa: BLE001 - compressed/tiled data cannot be mapped
        pass
    try:
        import zarr

        return zarr.open(tifffile.imread(path, aszarr=True, level=0), mode="r")
    except Exception:  # noqa: BLE001 - a layout tifffile's store does not map: read it whole
        return tifffile.imread(path)


def _tiff_axes(axes: str) -> str | None:
    # tifffile names unknown dimensions Q, I etc.; trust only T/Z/C/Y/X (S = RGB samples, last).
    axes = axes.upper()
    if axes.endswith("S") and "C" not in axes:
        axes = axes[:-1] + "C"
    if set(axes) <= set("TZCYX") and len(set(axes)) == len(axes):
        return axes
    return None


def _open_plain_file(p: Path) -> OpenedImage:
    src = ImageSource(str(p), "image")
    try:
        array = src.open()
    except Exception as exc:  # noqa: BLE001 - any decoder error means an unreadable file
        raise ValueError(f"cannot read {p}: {exc}") from None
    return OpenedImage(array, src, rgb=array.ndim == 3 and array.shape[-1] in (3, 4))
