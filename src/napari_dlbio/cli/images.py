"""Reading the inputs and writing the outputs of ``napari-dlbio predict``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import CLIError


def _expand_inputs(inputs: Sequence[str]) -> list[Path]:
    from ..data import IMAGE_SUFFIXES, list_images

    files: list[Path] = []
    for s in inputs:
        p = Path(s).expanduser()
        if p.is_dir():
            try:
                files += list_images(p)
            except FileNotFoundError as exc:
                raise CLIError(str(exc)) from None
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise CLIError(f"{p} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
            files.append(p)
        else:
            raise CLIError(f"no such file or folder: {p}")
    names: dict[str, Path] = {}
    for f in files:
        key = _out_name(f)
        if key in names:
            raise CLIError(f"{names[key]} and {f} would both be written as {key}; predict them separately")
        names[key] = f
    return files


def _out_name(path: Path, extra: str = "") -> str:
    suffix = path.suffix if path.suffix.lower() in (".tif", ".tiff") else ".tif"
    return f"{path.stem}{'_' + extra if extra else ''}{suffix}"


class _OpenImage:
    """An input image opened lazily where the format allows; closed on exit.

    Uncompressed TIFFs are memory-mapped, other TIFFs read chunk-wise through
    zarr; items are then read one at a time by the job runner. Axes come from the
    file (ImageJ hyperstacks) when they are unambiguous.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.array: Any = None
        self.axes: str | None = None
        self.rgb = False
        self._tif = None

    def __enter__(self) -> _OpenImage:
        from ..data import read_image

        if self.path.suffix.lower() not in (".tif", ".tiff"):
            try:
                self.array = read_image(self.path)
            except Exception as exc:  # noqa: BLE001 - any decoder error means an unreadable file
                raise CLIError(f"cannot read {self.path}: {exc}") from None
            self.rgb = self.array.ndim == 3 and self.array.shape[-1] in (3, 4)
            return self
        import tifffile

        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
        except Exception as exc:  # noqa: BLE001
            raise CLIError(f"cannot read {self.path}: {exc}") from None
        self.axes = _file_axes(series.axes)
        self.rgb = series.axes.endswith("S") and series.shape[-1] in (3, 4)
        try:
            self.array = tifffile.memmap(self.path, mode="r")
        except Exception:  # noqa: BLE001 - compressed/tiled data cannot be mapped
            self.array = self._zarr(series)
        return self

    def _zarr(self, series):
        try:
            import zarr

            return zarr.open(series.aszarr(), mode="r")
        except Exception:  # noqa: BLE001 - no zarr: read it whole
            return series.asarray()

    def __exit__(self, *exc) -> None:
        self.array = None
        if self._tif is not None:
            self._tif.close()


def _file_axes(axes: str) -> str | None:
    # tifffile names unknown dimensions Q, I etc.; trust only T/Z/C/Y/X (S = RGB samples, last).
    axes = axes.upper()
    if axes.endswith("S") and "C" not in axes:
        axes = axes[:-1] + "C"
    if set(axes) <= set("TZCYX") and len(set(axes)) == len(axes):
        return axes
    return None


def _guess_for_model(shape: tuple, rgb: bool, model, channels) -> str:
    """Guessed axes, where a small leading axis is not taken for channels the model cannot use.

    ``guess_axes`` reads (3, 512, 512) as CYX; for a one-channel model a 3-slice
    Z stack is the likelier meaning (and T after that when Z is taken).
    """
    from ..axes import guess_axes

    axes = guess_axes(shape, rgb=rgb)
    if rgb or channels is not None or "C" not in axes:
        return axes
    if model.accepts_channels(shape[axes.index("C")]):
        return axes
    for other in "ZT":
        if other not in axes:
            return axes.replace("C", other)
    return axes


class _TiffOutputs:
    """The job runner's output factory: each output a memory-mapped TIFF on disk.

    Files are written under a temporary name and renamed when the image is done,
    so a cancelled or failed run leaves no half-written TIFF with a real name.
    """

    def __init__(self, folder: Path, source: Path, plan) -> None:
        self.folder, self.source, self.plan = folder, source, plan
        self.files: dict[str, tuple[Path, Path, Any]] = {}

    def __call__(self, name: str, shape: tuple, dtype) -> Any:
        import numpy as np
        import tifffile

        final = self.folder / _out_name(self.source, "" if name in ("labels", "image") else name)
        tmp = final.with_name(f".{final.name}.partial")
        channels = len(shape) != len(self.plan.out_shape())
        meta = {"axes": self.plan.out_axes(channels)}
        big = int(np.prod(shape)) * np.dtype(dtype).itemsize > 2**31
        arr = tifffile.memmap(tmp, shape=shape, dtype=dtype, metadata=meta, bigtiff=big)
        self.files[name] = (tmp, final, arr)
        return arr

    def add_shapes(self, shapes, axes: str) -> None:
        """Polygons (StarDist) as a CSV that napari opens as a shapes layer."""
        from ..tasks import SHAPES

        final = self.folder / (Path(_out_name(self.source, "polygons")).stem + ".csv")
        tmp = final.with_name(f".{final.name}.partial")
        with open(tmp, "w") as fh:
            fh.write(",".join(["index", "shape-type", "vertex-index"] + [f"axis-{i}" for i in range(len(axes))]))
            fh.write("\n")
            for i, poly in enumerate(shapes):
                for j, v in enumerate(poly):
                    fh.write(f"{i},polygon,{j}," + ",".join(f"{c:.3f}" for c in v) + "\n")
        self.files[SHAPES] = (tmp, final, None)

    def commit(self) -> list[Path]:
        done = []
        for tmp, final, arr in self.files.values():
            if arr is not None:
                arr.flush()
            del arr
            os.replace(tmp, final)
            done.append(final)
        self.files.clear()
        return done

    def discard(self) -> None:
        for tmp, _, _ in self.files.values():
            try:
                tmp.unlink()
            except OSError:
                pass
        self.files.clear()
