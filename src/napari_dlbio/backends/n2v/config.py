"""CAREamics configuration: building one from our settings and reading our settings back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import Normalization
from .settings import Settings


def _careamics_axes(n_channels: int, ndim: int) -> str:
    # One-channel data goes in as plain YX/ZYX: the configuration then looks like any
    # other CAREamics N2V model (and its bioimage.io export like theirs).
    return ("C" if n_channels > 1 else "") + ("ZYX" if ndim == 3 else "YX")


def _to_careamics(item: np.ndarray) -> np.ndarray:
    """(C, *spatial) -> the array layout of :func:`_careamics_axes`."""
    return item[0] if item.shape[0] == 1 else item


def _make_config(
    settings: Settings,
    n_channels: int,
    ndim: int,
    patch: tuple[int, ...] | None = None,
    trainer_params: dict | None = None,
):
    """A CAREamics configuration through its own factory for the settings' algorithm."""
    patch = patch or ((settings.patch_size_z,) if ndim == 3 else ()) + (settings.patch_size,) * 2
    common = dict(
        experiment_name=f"napari-dlbio-{settings.algorithm}",
        data_type="array",
        axes=_careamics_axes(n_channels, ndim),
        patch_size=list(patch),
        batch_size=settings.batch_size,
        num_epochs=settings.epochs,
        num_steps=settings.steps_per_epoch,
        independent_channels=settings.independent_channels,
        normalization=settings.normalize,
        num_workers=0,  # worker processes cost more than they save on small in-memory data
        trainer_params={
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": max(1, min(10, settings.steps_per_epoch)),
            **(trainer_params or {}),
        },
        model_params={"depth": settings.depth, "num_channels_init": settings.base_filters},
        optimizer="Adam",
        optimizer_params={"lr": settings.learning_rate, "weight_decay": settings.weight_decay},
        # Our callback sets the learning rate every batch (cosine over epochs or the time
        # budget, as training.fit does); a StepLR that never steps leaves it alone.
        lr_scheduler="StepLR",
        lr_scheduler_params={"step_size": 10**9},
        seed=settings.seed + 1,  # CAREamics needs a positive seed
    )
    try:
        if settings.needs_targets():
            return _supervised_config(settings, n_channels, common)
        return _n2v_config(settings, n_channels, common)
    except ValueError as exc:  # pydantic errors of CAREamics' configuration
        raise ValueError(f"invalid {settings.algorithm} settings for CAREamics: {exc}") from exc


def _n2v_config(settings: Settings, n_channels: int, common: dict):
    from careamics.config.factories.n2v_factory import create_advanced_n2v_config

    augment = None if settings.augment else []
    if settings.augment and settings.struct_mask != "none":
        # Rotating patches would turn the direction of correlated noise away from the mask.
        augment = ["x_flip", "y_flip"]
    return create_advanced_n2v_config(
        **common,
        n_channels=n_channels if n_channels > 1 else None,
        augmentations=augment,
        use_n2v2=settings.algorithm == "n2v2",
        roi_size=settings.roi_size,
        masked_pixel_percentage=settings.masked_percent,
        struct_n2v_axes=settings.struct_mask,
        struct_n2v_span=settings.struct_span,
    )


def _supervised_config(settings: Settings, n_channels: int, common: dict):
    from careamics.config.factories.care_n2n_factory import (
        create_advanced_care_config,
        create_advanced_n2n_config,
    )

    n = n_channels if n_channels > 1 else None
    kw = dict(common, n_channels_in=n, n_channels_out=n, target_axes=common["axes"],
              augmentations=None if settings.augment else [])
    if settings.algorithm == "n2n":
        cfg = create_advanced_n2n_config(**kw)
    else:
        # No early stopping (CAREamics' default for CARE, patience 3): the epochs or the time
        # budget end the cosine schedule, whose final averaged weights are kept, as for N2V.
        cfg = create_advanced_care_config(**kw, early_stopping_params={})
    # The squared error for both (CAREamics' default is the absolute error). Noise2Noise
    # needs it: its minimiser is the mean of the noisy targets, i.e. the clean signal (the
    # absolute error gives their median). For CARE it predicts the mean of the clean images
    # a noisy input may come from, which is what PSNR rewards. Measured on bench_restore.py:
    # CARE 0.69 dB below N2N with the absolute error, still 0.36 dB below with this one.
    cfg.algorithm_config.loss = "mse"
    return cfg


def _settings_from_config(cfg) -> Settings:
    """Our settings describing a CAREamics configuration (checkpoints, bioimage.io zips)."""
    algo = cfg.algorithm_config
    model = algo.model
    patch = list(cfg.data_config.patching.patch_size)
    norm = cfg.data_config.normalization.name
    fields = dict(
        patch_size=_pow2_floor(patch[-1], 16),
        patch_size_z=_pow2_floor(patch[0], 4) if len(patch) == 3 else 16,
        depth=min(model.depth, 5),
        base_filters=model.num_channels_init,
        independent_channels=model.independent_channels,
        normalization=Normalization(mode="none"),  # a CAREamics model knows only its own
        normalize=norm if norm in ("mean_std", "min_max", "none") else "mean_std",
        batch_size=cfg.data_config.batch_size,
    )
    if algo.algorithm != "n2v":
        return Settings(algorithm=algo.algorithm, **fields)
    manip = algo.n2v_config
    struct = manip.struct_mask
    return Settings(
        algorithm="n2v2" if model.n2v2 else "n2v",
        struct_mask=struct.axes if struct is not None else "none",
        struct_span=struct.span if struct is not None else 5,
        masked_percent=manip.masked_pixel_percentage,
        roi_size=manip.roi_size,
        **fields,
    )


def _pow2_floor(v: int, lo: int) -> int:
    return max(lo, 1 << (max(1, int(v)).bit_length() - 1))


def _fit_patch(settings: Settings, shapes: list[tuple[int, ...]], ndim: int) -> tuple[int, ...]:
    """The configured patch, shrunk (to a power of two) where an image is smaller."""
    want = ((settings.patch_size_z,) if ndim == 3 else ()) + (settings.patch_size,) * 2
    smallest = [min(s[d] for s in shapes) for d in range(ndim)]
    yx = min(want[-1], _pow2_floor(min(smallest[-2:]), 1))
    out = ((min(want[0], _pow2_floor(smallest[0], 1)),) if ndim == 3 else ()) + (yx, yx)
    need = 2**settings.depth
    least = max(16 if ndim == 2 else 8, need)
    if min(out[-2:]) < least or min(out) < max(4, need):
        raise ValueError(
            f"the training images are too small for {settings.algorithm}: the smallest is {tuple(smallest)} "
            f"pixels, patches need at least {least} in Y and X (with a U-Net depth of {settings.depth})"
        )
    return out


def normalization_in_zip(path: Path) -> Normalization | None:
    """The per-image normalisation a zip exported by napari-dlbio states in its description."""
    import re
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            rdf = next((n for n in z.namelist() if n.endswith(("rdf.yaml", "bioimageio.yaml"))), None)
            text = z.read(rdf).decode("utf-8", "replace") if rdf else ""
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    text = " ".join(text.split())  # YAML may fold a long description over lines
    m = re.search(r"percentile ([0-9.]+) -> 0 and ([0-9.]+) -> 1( per channel)?", text)
    if m is None:
        return None
    return Normalization(mode="percentile", low=float(m.group(1)), high=float(m.group(2)),
                         per_channel=bool(m.group(3)))
