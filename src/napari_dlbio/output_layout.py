"""What every output format shares: names on disk, the default format and chunks, the axes
an output inherits, working names, and the checks for the output folder and a full disk.

An output factory (:mod:`.outputs`) is the job runner's :data:`tasks.OutFactory` (``(name, shape, dtype)
-> array`` opened for writing) with a few more methods: ``array_path(name)`` (a
``zarr.open``-able path, so worker processes write into the same array),
``finalize()`` (NGFF metadata, multiscale pyramid, TIFF conversion, then the final
name) and ``discard()``. Outputs are written under a hidden working name,
``.<final name>.partial``, which is stable for an input + output folder + format so
that ``--resume`` finds it (block markers live in its ``.dlbio/``); only a finished
output gets its real name, so a cut-short run never leaves anything that looks done.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMATS = ("tif", "zarr", "ome-zarr")
LARGE_OUTPUT_BYTES = 2 * 1024**3  # above this, outputs default to OME-Zarr
SCRATCH = ".dlbio"  # resume markers and block scratch inside a working store (see blockwise.py)
_MAIN = ("labels", "image")  # the output that takes the input's own name


def stem(path: str | Path) -> str:
    """The input's name without its suffix: ``cells.ome.zarr`` -> ``cells``, ``a.b.tif`` -> ``a.b``."""
    name = Path(path).name
    for s in (".ome.zarr", ".zarr"):
        if name.lower().endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return Path(name).stem


def output_path(out_dir: str | Path, input_path: str | Path, fmt: str) -> Path:
    """The final path of an input's main output: ``<stem>.ome.zarr``, ``<stem>.zarr``, or for
    TIFF the input's own file name (``.tif`` for PNG/JPEG inputs), as before OME-Zarr."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    name, p = stem(input_path), Path(input_path)
    if fmt == "tif":
        suffix = p.suffix if p.suffix.lower() in (".tif", ".tiff") else ".tif"
        return Path(out_dir) / f"{name}{suffix}"
    if name.lower().endswith(".ome"):  # x.ome.tif -> x.ome.zarr, not x.ome.ome.zarr
        name = name[:-4]
    return Path(out_dir) / f"{name}{'.ome.zarr' if fmt == 'ome-zarr' else '.zarr'}"


def default_format(input_kind: str, out_nbytes: int, out_axes: str = "YX") -> str:
    """OME-Zarr for OME-Zarr inputs and outputs over ~2 GB, TIFF otherwise; plain zarr where
    the axes' order is one NGFF does not allow (channels after Z, as in ImageJ's TZCYX)."""
    if input_kind == "ome-zarr" or out_nbytes > LARGE_OUTPUT_BYTES:
        return "ome-zarr" if ngff_order_ok(out_axes) else "zarr"
    return "tif"


def ngff_order_ok(axes: str) -> bool:
    """NGFF's rule: time first, then channel, then space axes (so ZCYX cannot be written)."""
    rank = {"T": 0, "C": 1, "Z": 2, "Y": 2, "X": 2}
    ranks = [rank[a] for a in axes]
    return ranks == sorted(ranks)


def default_chunks(axes: str, shape: Sequence[int], ndim: int = 2, block_size: int | None = None) -> tuple:
    """Chunks over the input's axes: one per item along loop axes, all channels together,
    256 px in Y/X (64 in Z for 3D models), or the block size when 256 does not divide it,
    so blocks (multiples of the chunks) never share a chunk with their neighbours."""
    spatial = "ZYX" if ndim == 3 else "YX"
    chunks = []
    for a, s in zip(axes, shape):
        if a == "C":
            chunks.append(int(s))
        elif a in spatial:
            base = 64 if a == "Z" else 256
            edge = base if block_size is None or block_size % base == 0 else int(block_size)
            chunks.append(max(1, min(edge, int(s))))
        else:
            chunks.append(1)
    return tuple(chunks)


class _Layout:
    """The input's axes and metadata, and what each output inherits from them."""

    def __init__(self, axes: str, ndim: int, scale, translate, chunks, units: dict[str, str]) -> None:
        from .axes import ItemPlan

        self.axes, self.ndim, self.units = axes, ndim, units
        self.plan = ItemPlan(axes, (1,) * len(axes), ndim)
        self.scale = dict(zip(axes, scale)) if scale is not None else {}
        self.translate = dict(zip(axes, translate)) if translate is not None else {}
        self.chunks = dict(zip(axes, chunks)) if chunks is not None else None

    def out_axes(self, shape: Sequence[int]) -> str:
        """An output's axes: the input's without C, or with its own channel axis."""
        plain = self.plan.out_axes()
        return plain if len(shape) == len(plain) else self.plan.out_axes(channels=True)

    def out_chunks(self, axes: str, shape: Sequence[int]) -> tuple[int, ...]:
        assert self.chunks is not None
        return tuple(int(s) if a == "C" else max(1, min(int(self.chunks.get(a, s)), int(s)))
                     for a, s in zip(axes, shape))

    def out_scale(self, axes: str) -> list[float]:
        return [1.0 if a == "C" else float(self.scale.get(a, 1.0)) for a in axes]

    def out_translate(self, axes: str) -> list[float]:
        return [0.0 if a == "C" else float(self.translate.get(a, 0.0)) for a in axes]


class OutputsBase:
    """What every format shares: the working and final names, polygons, discard."""

    def __init__(self, final: Path, layout: _Layout) -> None:
        self.final, self.layout = final, layout
        self.axes: dict[str, str] = {}  # output name -> its axes
        self._csv: tuple[Path, Path] | None = None

    def extra_path(self, name: str, suffix: str) -> Path:
        """``<stem>_<name><suffix>`` next to the main output."""
        return self.final.with_name(f"{stem(self.final)}_{name}{suffix}")

    def add_shapes(self, shapes, axes: str) -> None:
        """Polygons (StarDist) as a CSV that napari opens as a shapes layer."""
        final = self.extra_path("polygons", ".csv")
        tmp = final.with_name(f".{final.name}.partial")
        with open(tmp, "w") as fh:
            header = ["index", "shape-type", "vertex-index"] + [f"axis-{i}" for i in range(len(axes))]
            fh.write(",".join(header))
            fh.write("\n")
            for i, poly in enumerate(shapes):
                for j, v in enumerate(poly):
                    fh.write(f"{i},polygon,{j}," + ",".join(f"{c:.3f}" for c in v) + "\n")
        self._csv = (tmp, final)

    def _commit_csv(self) -> list[Path]:
        if self._csv is None:
            return []
        tmp, final = self._csv
        os.replace(tmp, final)
        self._csv = None
        return [final]

    def _discard_csv(self) -> None:
        if self._csv is not None:
            _remove(self._csv[0])
            self._csv = None


def is_labels(dtype) -> bool:
    """Integer outputs are label images (instances or classes); float ones are images."""
    return np.issubdtype(np.dtype(dtype), np.integer) or np.dtype(dtype) == bool


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def working_path(final: Path, suffix: str = "") -> Path:
    """The hidden name an output is written under until it is finished."""
    return final.with_name(f".{final.name}.partial{suffix}")


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` and make sure files can be written there, before any compute.

    A probe file rather than ``os.access``: read-only mounts, ACLs and root on a
    read-only file system all answer the probe truthfully.
    """
    import tempfile

    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".napari-dlbio-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from None
    return folder


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it, e.g. a worker's error re-raised) is a full disk."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_finished(final: Path) -> bool:
    """Whether an output was finished by an earlier run (``--resume`` skips its input)."""
    return final.exists() and not working_path(final).exists() and not working_path(final, ".zarr").exists()
