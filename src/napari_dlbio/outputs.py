"""Output factories: chunked zarr/OME-Zarr stores, and TIFF files (see :mod:`.output_layout`).

OME-Zarr layout (one store per input, ``<stem>.ome.zarr``): integer outputs (labels)
in NGFF's ``labels/<name>`` group, the ``image`` output (Noise2Void) as the store's own
multiscale image, other float outputs (probabilities) as images in ``<name>/``. The
input's pixels are not copied: the root's ``napari-dlbio`` attribute records the source,
and for OME-Zarr inputs each label image's ``image-label.source.image`` points at the
input (a relative path), so ome-zarr's reader shows them over the original image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import multiscale
from ._durable import fsync, swap_in
from .output_layout import (
    FORMATS,
    _MAIN,
    SCRATCH,
    OutputsBase,
    _Layout,
    _remove,
    default_chunks,
    is_disk_full,
    is_labels,
    ngff_order_ok,
    working_path,
)

ATTR = "napari-dlbio"  # our own root attribute (provenance, where each output is)


def output_factory(out_path: str | Path, fmt: str, axes: str, scale: Sequence[float] | None = None,
                   translate: Sequence[float] | None = None, chunks: Sequence[int] | None = None, *,
                   ndim: int = 2, source=None, units: dict[str, str] | None = None,
                   ngff_version: str = "0.5", resume: bool = False):
    """Outputs written at ``out_path`` (from :func:`output_path`) in ``fmt``.

    ``axes``, ``scale``, ``translate`` and ``chunks`` are the input's (one per input axis;
    outputs drop C or give it their own channels); ``ndim`` is the model's item ndim (where an
    added channel axis goes). ``source`` (an :class:`ngff.ImageSource`) is recorded in the
    output, never copied. ``chunks=None`` with ``tif`` writes memory-mapped TIFFs as before
    (in this process only); otherwise arrays are chunked zarr. ``resume`` reopens a working
    store left by an interrupted run instead of starting afresh.
    """
    layout = _Layout(axes.upper(), ndim, scale, translate, chunks, units or {})
    if fmt == "tif":
        return TiffOutputs(Path(out_path), layout, resume)
    if fmt in ("zarr", "ome-zarr"):
        return ZarrOutputs(Path(out_path), fmt, layout, source, ngff_version, resume)
    raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")


class ZarrOutputs(OutputsBase):
    """Outputs as chunked arrays of one zarr (``fmt="zarr"``) or OME-Zarr store."""

    def __init__(self, final: Path, fmt: str, layout: _Layout, source, version: str, resume: bool) -> None:
        import zarr

        super().__init__(final, layout)
        if fmt == "ome-zarr" and version not in ("0.4", "0.5"):
            raise ValueError(f"OME-Zarr outputs are written as NGFF 0.4 or 0.5, not {version}")
        self.fmt, self.source = fmt, source
        self.version = version if fmt == "ome-zarr" else None
        self.zarr_format = 2 if self.version == "0.4" else 3
        self.path = working_path(final)  # stable: --resume finds it; A's markers go in its .dlbio/
        self.keys: dict[str, str] = {}   # output name -> array key in the store
        self.resumable = True
        if not resume:
            _remove(self.path)
        try:
            self.root = zarr.open_group(str(self.path), mode="a", zarr_format=self.zarr_format)
        except Exception as exc:  # noqa: BLE001 - e.g. a store of the other zarr format
            what = "resume" if resume else "create"
            raise ValueError(f"cannot {what} the output store {self.path}: {exc}") from None

    def _key(self, name: str, labels: bool, axes: str) -> str:
        if self.fmt == "zarr" or not ngff_order_ok(axes):
            # NGFF cannot describe e.g. ZCYX (a 2D model's probabilities of a Z stack): such an
            # output is kept as a plain array (axes in its dimension names and our attribute)
            # rather than failing the run at its end.
            return name
        if labels:
            return f"labels/{name}/0"
        return "0" if name == "image" else f"{name}/0"

    def __call__(self, name: str, shape: tuple, dtype) -> Any:
        import zarr

        axes = self.layout.out_axes(shape)
        key = self._key(name, is_labels(dtype), axes)
        self.keys[name], self.axes[name] = key, axes
        if key in self.root:
            return self._reopen(name, key, shape, dtype)
        lay = self.layout
        chunks = (lay.out_chunks(axes, shape) if lay.chunks is not None
                  else default_chunks(axes, shape, lay.ndim))
        parent, leaf = key.rpartition("/")[::2]
        group = zarr.open_group(store=self.root.store, path=parent, mode="a", zarr_format=self.zarr_format)
        return multiscale.create_level(group, leaf, shape, dtype, chunks, axes, self.zarr_format)

    def _reopen(self, name: str, key: str, shape: tuple, dtype) -> Any:
        """The array an interrupted run left, if it is the same output."""
        arr = self.root[key]
        if tuple(arr.shape) != tuple(shape) or arr.dtype != np.dtype(dtype):
            raise ValueError(f"cannot resume {self.path}: its {name!r} output is {arr.shape} {arr.dtype}, "
                             f"this run writes {tuple(shape)} {np.dtype(dtype)}; rerun without --resume")
        return arr

    def array_path(self, name: str) -> str:
        """Where output ``name`` is: ``zarr.open(path, mode="r+")`` opens it in any process."""
        if name not in self.keys:
            raise KeyError(f"no output {name!r} was created in {self.path}")
        return str(self.path / self.keys[name])

    def finalize(self, ctx=None, attrs: dict | None = None) -> list[Path]:
        """Pyramids and NGFF metadata (OME-Zarr), provenance, then the final name."""
        import zarr

        ngff = [n for n, k in self.keys.items() if self.fmt == "ome-zarr" and (k == "0" or k.endswith("/0"))]
        for name in ngff:
            self._finish_ngff(name, ctx)
        info = {"source": _source_info(self.source), "outputs": {
            n: {"path": k.rpartition("/")[0] if n in ngff else k, "axes": self.axes[n], "ngff": n in ngff}
            for n, k in self.keys.items()}, **(attrs or {})}
        if len(ngff) < len(self.keys):
            info["scale"] = {n: self.layout.out_scale(a) for n, a in self.axes.items()}
            info["translate"] = {n: self.layout.out_translate(a) for n, a in self.axes.items()}
        root = zarr.open_group(str(self.path), mode="a", zarr_format=self.zarr_format)
        root.attrs[ATTR] = info
        _remove(self.path / SCRATCH)  # resume state is of no use once the output is finished
        # Chunks are not fsync'd one by one (a kill leaves them in the page cache; an fsync per
        # chunk would cost more than the prediction on network file systems); the rename is.
        swap_in(self.path, self.final)
        return [self.final, *self._commit_csv()]

    def _finish_ngff(self, name: str, ctx) -> None:
        import zarr

        key, axes = self.keys[name], self.axes[name]
        labels = key.startswith("labels/")
        where = self.path / key.rpartition("/")[0]
        group = zarr.open_group(str(where), mode="a", zarr_format=self.zarr_format)
        n = multiscale.write_pyramid(group, axes, labels, self.zarr_format, ctx)
        lay = self.layout
        sets = multiscale.datasets(n, lay.out_scale(axes), lay.out_translate(axes), axes, labels)
        multiscale.write_image_metadata(group, self.version, axes, lay.units, sets, name)
        if labels:
            labels_group = zarr.open_group(str(self.path / "labels"), mode="a", zarr_format=self.zarr_format)
            multiscale.write_label_metadata(labels_group, name, self.version, self._source_link(name))

    def _source_link(self, name: str) -> str | None:
        """The input image relative to ``labels/<name>`` in the finished store, for OME-Zarr inputs."""
        if self.source is None or self.source.kind != "ome-zarr":
            return None
        image = Path(self.source.path) / self.source.dataset.rpartition("/")[0]
        return os.path.relpath(image.resolve(), (self.final / "labels" / name).resolve())

    def discard(self) -> None:
        _remove(self.path)
        self._discard_csv()


def _source_info(source) -> dict | None:
    if source is None:
        return None
    return {"path": str(Path(source.path).resolve()), "kind": source.kind, "dataset": source.dataset}


class TiffOutputs(OutputsBase):
    """Outputs as TIFF files: ``<stem>.tif`` for labels/image, ``<stem>_<name>.tif`` for others.

    Without chunks (the default), memory-mapped TIFFs under a hidden name, renamed when done
    (as before zarr outputs existed). With chunks, the arrays are staged in a hidden zarr store
    (so workers can write blocks in parallel and ``--resume`` works) and converted to tiled
    (Big)TIFFs band by band at the end.
    """

    def __init__(self, final: Path, layout: _Layout, resume: bool) -> None:
        super().__init__(final, layout)
        self.staged = layout.chunks is not None
        self.path = working_path(final, ".zarr") if self.staged else None
        self.files: dict[str, tuple[Path, Path, Any]] = {}
        self.resumable = self.staged  # a memory-mapped TIFF is rewritten whole
        if self.staged and not resume:
            _remove(self.path)

    def _final(self, name: str) -> Path:
        return self.final if name in _MAIN else self.extra_path(name, self.final.suffix)

    def __call__(self, name: str, shape: tuple, dtype) -> Any:
        import tifffile

        final, axes = self._final(name), self.layout.out_axes(shape)
        self.axes[name] = axes
        if self.staged:
            return self._staged(name, final, axes, shape, dtype)
        tmp = working_path(final)
        big = int(np.prod(shape)) * np.dtype(dtype).itemsize > 2**31
        arr = tifffile.memmap(tmp, shape=shape, dtype=dtype, metadata={"axes": axes}, bigtiff=big)
        self.files[name] = (tmp, final, arr)
        _reserve(tmp)
        return arr

    def _staged(self, name: str, final: Path, axes: str, shape: tuple, dtype) -> Any:
        import zarr

        root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
        if name in root and root[name].shape == tuple(shape) and root[name].dtype == np.dtype(dtype):
            arr = root[name]  # left by an interrupted run (--resume)
        else:
            arr = multiscale.create_level(root, name, shape, dtype, self.layout.out_chunks(axes, shape), axes)
        self.files[name] = (working_path(final), final, arr)
        return arr

    def array_path(self, name: str) -> str:
        if not self.staged:
            raise ValueError("memory-mapped TIFF outputs are written in this process only; "
                             "give chunks to stage them in zarr")
        return str(self.path / name)

    def finalize(self, ctx=None, attrs: dict | None = None) -> list[Path]:
        done = []
        for name, (tmp, final, arr) in self.files.items():
            if self.staged:
                _zarr_to_tiff(arr, tmp, self.axes[name], ctx)
            else:
                arr.flush()
            del arr
            fsync(tmp)
            os.replace(tmp, final)
            done.append(final)
        self.files.clear()
        if self.staged:
            _remove(self.path)
        return done + self._commit_csv()

    commit = finalize  # the name cli.images used

    def discard(self) -> None:
        for tmp, _, _ in self.files.values():
            _remove(tmp)
        self.files.clear()
        if self.staged:
            _remove(self.path)
        self._discard_csv()


def _reserve(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now: on a full disk, writing into a sparse
    mapping kills the process (SIGBUS) mid-run; this fails at once with ENOSPC instead."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if is_disk_full(exc):
            raise
        # Not supported by this file system: the mapping stays sparse, as before.
    finally:
        os.close(fd)


def _zarr_to_tiff(arr, path: Path, axes: str, ctx=None, tile: int = 256) -> None:
    """A staged output as a tiled (Big)TIFF, reading one band of rows at a time."""
    import tifffile

    big = int(np.prod(arr.shape)) * arr.dtype.itemsize > 2**31
    if not axes.endswith("YX"):
        # A channel axis last (RGB-like): rare and small; tifffile wants whole pages here.
        tifffile.imwrite(path, np.asarray(arr[...]), bigtiff=big, metadata={"axes": axes})
        return

    def tiles():
        height, width = arr.shape[-2:]
        for page in np.ndindex(*arr.shape[:-2]):
            if ctx is not None:
                ctx.check()
            for y in range(0, height, tile):
                band = np.asarray(arr[page + (slice(y, y + tile), slice(None))])
                for x in range(0, width, tile):
                    yield band[:, x : x + tile]

    tifffile.imwrite(path, tiles(), shape=arr.shape, dtype=arr.dtype, tile=(tile, tile), bigtiff=big,
                     metadata={"axes": axes})
