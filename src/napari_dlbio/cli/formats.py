"""``predict``'s outputs for large images: the format, the output factory, block options, a full disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import CLIError


@dataclass(frozen=True)
class LargeImageOptions:
    """``--out-format``, ``--block-size``, ``--block-overlap``, ``--memory-limit``, ``--resume``."""

    out_format: str | None = None
    block_size: int | None = None
    overlap: int | None = None
    memory_limit: int | None = None  # bytes
    resume: bool = False

    def engine_kwargs(self) -> dict[str, Any]:
        """Only the options given, so a run without them calls ``tasks.predict`` as before."""
        given = {"block_size": self.block_size, "overlap": self.overlap,
                 "memory_limit": self.memory_limit, "resume": self.resume or None}
        return {k: v for k, v in given.items() if v is not None}


def large_image_options(args) -> LargeImageOptions:
    block, overlap = getattr(args, "block_size", None), getattr(args, "block_overlap", None)
    if block is not None and block < 16:
        raise CLIError(f"--block-size must be at least 16 pixels (not {block})")
    if overlap is not None and (overlap < 0 or (block is not None and 2 * overlap >= block)):
        raise CLIError(f"--block-overlap must be between 0 and half the block size (not {overlap})")
    memory = _bytes(getattr(args, "memory_limit", None))
    return LargeImageOptions(getattr(args, "out_format", None), block, overlap, memory,
                             bool(getattr(args, "resume", False)))


def _bytes(text: str | None) -> int | None:
    if text is None:
        return None
    from dask.utils import parse_bytes

    try:
        n = int(parse_bytes(text))
    except (ValueError, TypeError):
        raise CLIError(f"--memory-limit takes a size like 2GB or 512MiB (not {text!r})") from None
    if n < 2**20:
        raise CLIError(f"--memory-limit {text} is below 1 MiB; give a size like 2GB")
    return n


def choose_format(opts: LargeImageOptions, model, img, plan) -> str:
    """``--out-format``, else the default rule for this input (see ``outputs.default_format``)."""
    import numpy as np

    from ..ngff import default_format

    if opts.out_format:
        return opts.out_format
    image = model.output == "image"
    channels = image and ("C" in plan.axes or plan.n_channels > 1)
    shape = plan.out_shape(plan.n_channels if channels else None)
    return default_format(img.source.kind, int(np.prod(shape, dtype=np.int64)) * 4, plan.out_axes(channels))


def make_outputs(opts: LargeImageOptions, final: Path, fmt: str, img, axes: str, plan):
    """The output factory for one input. TIFFs stay memory-mapped (as before) unless blocks are
    asked for; zarr outputs are chunked so that blocks align with chunks."""
    from ..ngff import default_chunks, output_factory

    blockwise = any(v is not None for v in (opts.block_size, opts.overlap, opts.memory_limit)) or opts.resume
    chunks = None
    if fmt != "tif" or blockwise:
        chunks = default_chunks(axes, tuple(img.array.shape), plan.ndim, opts.block_size)
    return output_factory(final, fmt, axes, img.scale, img.translate, chunks, ndim=plan.ndim,
                          source=img.source, units=img.units, ngff_version=img.ngff_version or "0.5",
                          resume=opts.resume)


def check_out_dir(out_dir: Path, files: list[Path], out_format: str | None) -> Path:
    """``--out`` as a writable folder (checked before any compute) that overwrites no input."""
    from ..ngff import FORMATS, check_writable, output_path

    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} is a file, not a folder")
    for f in files:
        for fmt in [out_format] if out_format else FORMATS:
            if output_path(out_dir, f, fmt).resolve() == f.resolve():
                raise CLIError(f"--out would overwrite the input {f}; choose another folder")
    try:
        return check_writable(out_dir)
    except PermissionError as exc:
        raise CLIError(str(exc)) from None


def disk_full(f: Path, outputs, out_dir: Path) -> CLIError:
    """The one message for a full disk; resumable outputs stay where ``--resume`` finds them."""
    import shutil

    if not getattr(outputs, "resumable", False):
        outputs.discard()
    try:
        free = f"{shutil.disk_usage(out_dir).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return CLIError(f"{f.name}: no space left on the device writing to {out_dir} ({free}); "
                    "free some space and rerun the same command with --resume to continue")


def keep_partial(job, f: Path, outputs) -> None:
    """After a cancel or a failure: resumable outputs stay (and are named), others go."""
    if getattr(outputs, "resumable", False):
        job.log(f"{f.name}: partial output kept in {outputs.path}; rerun with --resume to continue")
    else:
        outputs.discard()
