"""bioimage.io: export with CAREamics' exporter (what a zip says about its normalisation: :mod:`.config`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ...store import ModelError
from .config import _to_careamics
from .model import N2VModel


def export_bioimageio(
    model: N2VModel,
    path: str | Path,
    name: str | None = None,
    description: str | None = None,
    authors: list[dict] | None = None,
    example: np.ndarray | None = None,
) -> Path:
    """Write ``model`` as a bioimage.io model zip with CAREamics' exporter; returns the zip path.

    ``example``: an input item ``(C, *spatial)`` in raw intensities used as the zip's test
    input/output (default: a smooth synthetic image of 256 px, 16 px deep in 3D). The
    export runs offline.
    """
    from careamics import CAREamist

    path = Path(path).expanduser()
    if path.suffix.lower() != ".zip":
        path = path.with_suffix(".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    if example is None:
        example = _example_input(model)
    example = model._pre(model.check_item(example))[0]
    mult = 2 ** model.config.algorithm_config.model.depth
    example = example[(slice(None),) + tuple(slice(0, max(mult, d // mult * mult)) for d in example.shape[1:])]
    title = name or (model.info.name if model.info is not None else model.name)
    friendly = "".join(c if c.isalnum() or c in "-_()" else "_" for c in title) or "n2v"
    prov = model.info.provenance if model.info is not None else {}
    workdir = Path(tempfile.mkdtemp(prefix="napari-dlbio-n2v-export-"))
    try:
        cam = CAREamist(model.config, work_dir=workdir, enable_progress_bar=False)
        cam.model.load_state_dict(model.module.state_dict())
        cam.export_to_bmz(
            path_to_archive=path,
            friendly_model_name=friendly,
            input_array=_to_careamics(example),
            authors=authors or [{"name": "napari-dlbio user"}],
            general_description=description or _description(model),
            data_description=f"Trained on: {', '.join(s.get('image', '?') for s in prov.get('sources', []))}"
            if prov.get("sources") else "Self-supervised training on the user's noisy images.",
        )
    except Exception as exc:  # noqa: BLE001 - exporter errors come from many packages
        raise ModelError(f"bioimage.io export to {path} failed: {exc}") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return path


def _description(model: N2VModel) -> str:
    text = f"Noise2Void ({model.settings.algorithm.upper()}) denoiser trained with napari-dlbio and CAREamics."
    n = model.settings.normalization
    if n.mode == "percentile":
        # The zip holds CAREamics' own normalisation only; say what else the input needs.
        text += (f" Inputs must first be normalised per image: percentile {n.low:g} -> 0 and "
                 f"{n.high:g} -> 1{' per channel' if n.per_channel else ''} (napari-dlbio does this itself).")
    return text


def _example_input(model: N2VModel) -> np.ndarray:
    stats = model.config.data_config.normalization
    mean = float(np.mean(getattr(stats, "input_means", None) or [0.0]))
    std = float(np.mean(getattr(stats, "input_stds", None) or [1.0]))
    shape = (model.n_channels,) + ((16,) if model.ndim == 3 else ()) + (256, 256)
    rng = np.random.default_rng(0)
    return (mean + std * rng.standard_normal(shape)).astype(np.float32)
