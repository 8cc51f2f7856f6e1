"""Reading the inputs and writing the outputs of ``napari-dlbio predict``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .common import CLIError


def _expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files and zarr stores; a folder gives its images and its zarr stores (a store is one input)."""
    from ..ngff import is_zarr

    files: list[Path] = []
    for s in inputs:
        p = Path(s).expanduser()
        if is_zarr(p):
            files.append(p)
        elif p.is_dir():
            files += _folder_inputs(p)
        elif p.is_file():
            _check_suffix(p)
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


def _folder_inputs(folder: Path) -> list[Path]:
    from ..data import IMAGE_SUFFIXES
    from ..ngff import is_zarr

    found = sorted(p for p in folder.iterdir()
                   if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or is_zarr(p))
    if not found:
        raise CLIError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or zarr stores in {folder}")
    return found


def _check_suffix(p: Path) -> None:
    from ..data import IMAGE_SUFFIXES

    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise CLIError(f"{p} is not an image file ({', '.join(IMAGE_SUFFIXES)}) or a zarr store")


def _out_name(path: Path, extra: str = "") -> str:
    """The TIFF output's file name (the input's own, ``.tif`` for other inputs)."""
    from ..ngff import stem

    suffix = path.suffix if path.suffix.lower() in (".tif", ".tiff") else ".tif"
    return f"{stem(path)}{'_' + extra if extra else ''}{suffix}"


def _OpenImage(path: Path):  # noqa: N802 - the name the CLI and its tests used for the opener
    """An input opened lazily (see :func:`napari_dlbio.ngff.open_image`); a context manager."""
    from ..ngff import open_image

    try:
        return open_image(path)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None


def _file_axes(axes: str) -> str | None:
    from ..ngff import _tiff_axes

    return _tiff_axes(axes)


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


def _TiffOutputs(folder: Path, source: Path, plan):  # noqa: N802 - kept for callers of the old class
    """Memory-mapped TIFF outputs for ``source``'s items, renamed when done (see ``outputs``)."""
    from ..ngff import output_factory, output_path

    return output_factory(output_path(folder, source, "tif"), "tif", plan.axes, ndim=plan.ndim)
