"""Write a model as a bioimage.io model package (spec 0.5), one implementation for every backend.

The backend hands over what differs (:class:`~napari_dlbio.bioimageio_parts.BioimageioParts`:
its network, how it was normalised, what its outputs mean); this module writes the
rest with ``bioimageio.spec``'s own builders, never hand-written YAML:

- weights twice: a PyTorch state dict with the architecture it needs (a source file
  of ours, or CAREamics' importable UNet) and TorchScript (what deepImageJ and
  other Java consumers run);
- a test input (raw intensities; the normalisation is the package's preprocessing)
  and the test output computed here by the same network, which
  ``bioimageio.core.test_model`` recomputes;
- a cover, a README (:mod:`napari_dlbio.bioimageio_doc`), citations, a licence;
- our saved model folder (``model.json`` and the backend's files) as attachments,
  so that our import restores everything (:mod:`napari_dlbio.bioimageio_import`).

Nothing here imports torch or bioimageio at module import time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .bioimageio_parts import BioimageioParts, Tensor
from .jobs import JobContext
from .store import ModelError

INPUT_ID = "raw"
STATE_DICT = "bmz_state_dict.pt"
TORCHSCRIPT = "bmz_torchscript.pt"
EXAMPLE_EDGE = 256          # the test input's largest spatial size (3D: 32 deep)
LICENSE = "BSD-3-Clause"    # napari-dlbio's own licence: weights trained with it carry no other terms


def export_model(model, out_zip: str | Path, *, example: np.ndarray | None = None,
                 authors: list[str] | None = None, force: bool = False, ctx: JobContext | None = None) -> Path:
    """Write ``model`` (saved in the store or a model folder) as a bioimage.io zip; returns its path.

    ``example``: one input item ``(C, *spatial)`` in raw intensities for the test
    tensors and the cover (default: the synthetic nuclei sample). Refuses to replace
    an existing file unless ``force``; the zip appears whole or not at all.
    """
    ctx = ctx or JobContext()
    out = _target(out_zip, force)
    if model.info is None or not Path(model.info.path).is_dir():
        raise ModelError("save the model first: a bioimage.io package carries the saved model folder")
    parts: BioimageioParts = model.bioimageio()
    ctx.report(0, 3, "computing the test output", kind="info")
    x = crop_to_valid(_example(model, example), parts)
    y = run_network(parts, x)
    with tempfile.TemporaryDirectory(prefix="napari-dlbio-bmz-") as tmp:
        ctx.report(1, 3, "writing weights (state dict, TorchScript)", kind="info")
        files = _write_files(model, parts, x, y, Path(tmp))
        descr = _describe(model, parts, files, authors)
        ctx.report(2, 3, "writing the zip", kind="info")
        _save(descr, out)
    ctx.report(3, 3, f"exported {out}", kind="info")
    return out


def validate_zip(path: str | Path) -> tuple[str, str]:
    """``(status, details)`` of ``bioimageio.core.test_model`` on the zip ("passed" when valid)."""
    from bioimageio.core import test_model

    summary = test_model(Path(path))
    failed = [f"{d.name}: {d.errors[0].msg if d.errors else ''}" for d in summary.details if d.status == "failed"]
    return str(summary.status), "; ".join(failed)


# -- tensors ------------------------------------------------------------------------------------------
def crop_to_valid(x: np.ndarray, parts: BioimageioParts) -> np.ndarray:
    """The largest crop of ``x`` (C, *spatial) of a size the package accepts, at most EXAMPLE_EDGE."""
    sizes = []
    for n, lo, step in zip(x.shape[1:], parts.min_shape, parts.step):
        cap = min(n, EXAMPLE_EDGE if len(parts.min_shape) == 2 or n != x.shape[1] else 32)
        if cap < lo:
            raise ModelError(f"the example image ({x.shape[1:]}) is smaller than the model's minimum {parts.min_shape}")
        sizes.append(lo + (cap - lo) // step * step)
    return np.ascontiguousarray(x[(slice(None),) + tuple(slice(0, s) for s in sizes)], dtype=np.float32)


def normalise(x: np.ndarray, parts: BioimageioParts) -> np.ndarray:
    """What the package's preprocessing does to ``x`` (C, *spatial) before the network."""
    n = parts.normalization
    out = x.astype(np.float32)
    if n.kind in ("percentile", "percentile_mean_std"):
        axes = tuple(range(1, x.ndim)) if n.per_channel else None
        lo, hi = np.percentile(out, [n.low, n.high], axis=axes, keepdims=True)
        out = (out - lo) / (hi - lo + 1e-6)
    if n.kind in ("mean_std", "percentile_mean_std"):
        shape = (-1,) + (1,) * (x.ndim - 1)
        out = (out - np.asarray(n.mean, np.float32).reshape(shape)) / (np.asarray(n.std, np.float32).reshape(shape) + 1e-6)
    return out.astype(np.float32)


def run_network(parts: BioimageioParts, x: np.ndarray) -> list[np.ndarray]:
    """The package's outputs for the raw item ``x``: preprocessing, network, postprocessing."""
    import torch

    with torch.no_grad():
        out = parts.network(torch.from_numpy(normalise(x, parts)[None]))
    outs = [o.float().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
    n = parts.normalization
    if n.output_mean:
        shape = (1, -1) + (1,) * (x.ndim - 1)
        outs[0] = outs[0] * np.asarray(n.output_std, np.float32).reshape(shape) + np.asarray(
            n.output_mean, np.float32).reshape(shape)
    return [o.astype(np.float32) for o in outs]


def _example(model, example: np.ndarray | None) -> np.ndarray:
    if example is not None:
        x = np.asarray(example, dtype=np.float32)
        if x.ndim != model.ndim + 1 or x.shape[0] != model.n_channels:
            raise ModelError(f"the example must be one item (C, {'Z, ' if model.ndim == 3 else ''}Y, X) with "
                             f"{model.n_channels} channel(s), not shape {x.shape}")
        return x
    from . import samples

    if model.ndim == 3:
        img = samples.nuclei_3d((32, 128, 128), seed=0)[0]
    else:
        img = samples.nuclei_2d((EXAMPLE_EDGE, EXAMPLE_EDGE), seed=0)[0]
    return np.repeat(np.asarray(img, np.float32)[None], model.n_channels, axis=0)


# -- files ----------------------------------------------------------------------------------------------
def _write_files(model, parts: BioimageioParts, x: np.ndarray, ys: list[np.ndarray], tmp: Path) -> dict[str, Any]:
    import torch

    from .bioimageio_doc import write_cover, write_readme

    files: dict[str, Any] = {"input": tmp / "test_input.npy", "outputs": []}
    np.save(files["input"], x[None])
    for t, y in zip(parts.outputs, ys):
        files["outputs"].append(tmp / f"test_output_{t.name}.npy")
        np.save(files["outputs"][-1], y)
    torch.save(parts.network.state_dict(), tmp / STATE_DICT)
    _torchscript(parts, x).save(str(tmp / TORCHSCRIPT))
    files["state_dict"], files["torchscript"] = tmp / STATE_DICT, tmp / TORCHSCRIPT
    if parts.architecture.source is not None:
        files["source"] = tmp / Path(parts.architecture.source).name
        shutil.copyfile(parts.architecture.source, files["source"])
    files["cover"] = write_cover(x, ys[0], parts, tmp / "cover.png")
    files["readme"] = write_readme(model, parts, tmp / "README.md")
    files["attachments"] = _attach_model_folder(Path(model.info.path), tmp / "model")
    return files


def _torchscript(parts: BioimageioParts, x: np.ndarray):
    """Traced TorchScript of the network; tracing fixes no size (the networks pad by arithmetic)."""
    import torch

    with torch.no_grad():
        return torch.jit.trace(parts.network, torch.from_numpy(normalise(x, parts)[None]), check_trace=False)


def _attach_model_folder(folder: Path, dest: Path) -> list[Path]:
    """Our saved model's files (model.json and the backend's), copied flat for the package."""
    dest.mkdir()
    out = []
    for f in sorted(folder.iterdir()):
        if f.is_file():
            out.append(dest / f.name)
            shutil.copyfile(f, out[-1])
    if not any(p.name == "model.json" for p in out):
        raise ModelError(f"{folder} has no model.json: it is not a saved model")
    return out


def _save(descr, out: Path) -> None:
    """Write the package next to ``out`` and rename it in: a reader never sees half a zip."""
    from bioimageio.spec import save_bioimageio_package

    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        save_bioimageio_package(descr, output_path=partial)
        os.replace(partial, out)
    except Exception as exc:  # noqa: BLE001 - the spec library raises many kinds
        raise ModelError(f"could not write {out}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def _target(out_zip: str | Path, force: bool) -> Path:
    out = Path(out_zip).expanduser().absolute()
    if out.suffix.lower() != ".zip":
        raise ModelError(f"{out}: a bioimage.io package is a .zip file; give a path ending in .zip")
    if out.exists() and not force:
        raise ModelError(f"{out} exists; choose another name or allow replacing it (--force)")
    if not out.parent.is_dir():
        raise ModelError(f"{out.parent} does not exist; create the folder first")
    if not os.access(out.parent, os.W_OK):
        raise ModelError(f"{out.parent} is not writable; choose another folder")
    return out


# -- the description ----------------------------------------------------------------------------------
def _describe(model, parts: BioimageioParts, files: dict[str, Any], authors: list[str] | None):
    from bioimageio.spec.model import v0_5 as b

    from . import __version__

    info = model.info
    return b.ModelDescr(
        name=_title(info.name, model),
        description=parts.method,
        authors=[b.Author(name=a) for a in (authors or ["napari-dlbio user"])],
        cite=[_cite(c) for c in parts.citations] + [b.CiteEntry(
            text="napari-dlbio: deep learning for microscopy in napari", url="https://github.com/napari-dlbio")],
        license=LICENSE,
        documentation=b.FileDescr(source=files["readme"]),
        covers=[b.FileDescr(source=files["cover"])],
        inputs=[_input(model, parts, files["input"])],
        outputs=[_output(parts, t, f, len(parts.min_shape)) for t, f in zip(parts.outputs, files["outputs"])],
        weights=_weights(parts, files),
        attachments=[b.FileDescr(source=p) for p in files["attachments"]],
        tags=["napari-dlbio", f"{model.ndim}d", *parts.tags],
        version="0.1.0",
        config={"napari-dlbio": {"version": __version__, "backend": model.backend, "model_name": info.name,
                                 "model_json": "model.json", **parts.extra},
                "bioimageio": {"test_kwargs": {k: {"absolute_tolerance": 1e-4, "relative_tolerance": 1e-4}
                                               for k in ("pytorch_state_dict", "torchscript")}}},
    )


def _title(name: str, model) -> str:
    """bioimage.io names allow letters, digits, spaces and ``_-()``: other characters become spaces."""
    text = "".join(c if c.isalnum() or c in " _-()" else " " for c in f"{name} ({model.spec.title.split(' (')[0]})")
    return " ".join(text.split())[:128]


def _cite(c: dict):
    from bioimageio.spec.model import v0_5 as b

    return b.CiteEntry(text=c["text"], doi=c.get("doi"), url=c.get("url"))


def _spatial_axes(ndim: int) -> list[str]:
    return ["z", "y", "x"][-ndim:]


def _input(model, parts: BioimageioParts, test: Path):
    from bioimageio.spec.model import v0_5 as b

    names = parts.input_channels or tuple(f"channel{i}" for i in range(model.n_channels))
    axes = [b.BatchAxis(), b.ChannelAxis(channel_names=[b.Identifier(n) for n in names])]
    axes += [b.SpaceInputAxis(id=b.AxisId(a), size=b.ParameterizedSize(min=lo, step=st))
             for a, lo, st in zip(_spatial_axes(model.ndim), parts.min_shape, parts.step)]
    return b.InputTensorDescr(id=b.TensorId(INPUT_ID), axes=axes, test_tensor=b.FileDescr(source=test),
                              preprocessing=_preprocessing(parts, model.ndim),
                              description="raw intensities of one image (any number type)")


def _preprocessing(parts: BioimageioParts, ndim: int) -> list:
    from bioimageio.spec.model import v0_5 as b

    n, ops = parts.normalization, [b.EnsureDtypeDescr(kwargs=b.EnsureDtypeKwargs(dtype="float32"))]
    if n.kind in ("percentile", "percentile_mean_std"):
        axes = [b.AxisId(a) for a in _spatial_axes(ndim)] + ([] if n.per_channel else [b.AxisId("channel")])
        ops.append(b.ScaleRangeDescr(kwargs=b.ScaleRangeKwargs(axes=axes, min_percentile=n.low,
                                                               max_percentile=n.high, eps=1e-6)))
    if n.kind in ("mean_std", "percentile_mean_std"):
        ops.append(b.FixedZeroMeanUnitVarianceDescr(kwargs=b.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=list(n.mean), std=[s + 1e-6 for s in n.std], axis=b.AxisId("channel"))))
    return ops


def _output(parts: BioimageioParts, t: Tensor, test: Path, ndim: int):
    from bioimageio.spec.model import v0_5 as b

    axes = [b.BatchAxis(), b.ChannelAxis(channel_names=[b.Identifier(c) for c in t.channels])]
    scales = t.scale if isinstance(t.scale, tuple) else (t.scale,) * ndim
    for a, scale in zip(_spatial_axes(ndim), scales):
        size = b.SizeReference(tensor_id=b.TensorId(INPUT_ID), axis_id=b.AxisId(a))
        if t.halo:
            axes.append(b.SpaceOutputAxisWithHalo(id=b.AxisId(a), size=size, halo=t.halo, scale=float(scale)))
        else:
            axes.append(b.SpaceOutputAxis(id=b.AxisId(a), size=size, scale=float(scale)))
    post = []
    n = parts.normalization
    if n.output_mean and t is parts.outputs[0]:
        # The network's output is in normalised units; bioimage.io's fixed mean/std op undoes it:
        # (y - (-m/s)) / (1/s) = y * s + m.
        post.append(b.FixedZeroMeanUnitVarianceDescr(kwargs=b.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=[-m / s for m, s in zip(n.output_mean, n.output_std)], std=[1 / s for s in n.output_std],
            axis=b.AxisId("channel"))))
    return b.OutputTensorDescr(id=b.TensorId(t.name), axes=axes, test_tensor=b.FileDescr(source=test),
                               description=t.description, postprocessing=post)


def _weights(parts: BioimageioParts, files: dict[str, Any]):
    import torch
    from bioimageio.spec.model import v0_5 as b

    arch = parts.architecture
    if arch.source is not None:
        architecture = b.ArchitectureFromFileDescr(source=files["source"], callable=b.Identifier(arch.callable),
                                                   kwargs=arch.kwargs)
    else:
        architecture = b.ArchitectureFromLibraryDescr(import_from=arch.import_from,
                                                      callable=b.Identifier(arch.callable), kwargs=arch.kwargs)
    version = b.Version(torch.__version__.split("+")[0])
    return b.WeightsDescr(
        pytorch_state_dict=b.PytorchStateDictWeightsDescr(source=files["state_dict"], architecture=architecture,
                                                          pytorch_version=version),
        torchscript=b.TorchscriptWeightsDescr(source=files["torchscript"], pytorch_version=version,
                                              parent="pytorch_state_dict"),
    )
