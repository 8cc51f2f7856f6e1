"""What a bioimage.io package of a restoration model says: CAREamics' U-Net and the normalisation chain.

Our models normalise twice before CAREamics' network: per image by percentiles
(our settings), then by the training set's mean and standard deviation
(CAREamics' statistics); the network's output is then denormalised with the
target's statistics (CARE, N2N) or the input's (N2V). The package states all of
it as preprocessing and postprocessing, so its output is the restored image in the
percentile-normalised units (napari-dlbio maps it back to the input's range).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ...bioimageio_parts import Architecture, BioimageioParts, Normalization, Tensor

CITATIONS = {
    "n2v": ({"text": "Krull, Buchholz, Jug. Noise2Void - Learning Denoising from Single Noisy Images. CVPR 2019",
             "doi": "10.1109/CVPR.2019.00223"},),
    "n2v2": ({"text": "Höck et al. N2V2 - Fixing Noise2Void Checkerboard Artifacts with Modified Sampling "
                      "Strategies and a Tweaked Network Architecture. ECCV Workshops 2022",
              "doi": "10.48550/arXiv.2211.08512"},),
    "care": ({"text": "Weigert et al. Content-aware image restoration: pushing the limits of fluorescence "
                      "microscopy. Nature Methods 2018", "doi": "10.1038/s41592-018-0216-7"},),
    "n2n": ({"text": "Lehtinen et al. Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018",
             "url": "https://arxiv.org/abs/1803.04189"},),
}
CAREAMICS = {"text": "CAREamics: a modern, user-friendly library for deep-learning-based image restoration",
             "url": "https://careamics.github.io"}
WHAT = {"n2v": "Noise2Void", "n2v2": "N2V2", "care": "CARE", "n2n": "Noise2Noise"}


def parts(model) -> BioimageioParts:
    cfg = model.config
    stats = cfg.data_config.normalization
    algo = model.settings.algorithm
    n = model.settings.normalization
    mean, std = _stats(stats, "input", model.n_channels)
    out_mean, out_std = _stats(stats, "target", model.n_channels) if stats.target_means else (mean, std)
    m = 2 ** int(cfg.algorithm_config.model.depth)
    return BioimageioParts(
        network=copy.deepcopy(model.module.model).cpu().eval(),
        architecture=Architecture("UNet", cfg.algorithm_config.model.model_dump(mode="json"),
                                  import_from="careamics.models.unet"),
        normalization=Normalization(
            "percentile_mean_std" if n.mode == "percentile" else "mean_std", n.low, n.high, n.per_channel,
            mean=mean, std=std, output_mean=out_mean, output_std=tuple(s + 1e-6 for s in out_std)),
        outputs=(Tensor("restored", "the restored image in the percentile-normalised input's units (see README)",
                        tuple(f"channel{i}" for i in range(model.n_channels))),),
        min_shape=(m,) * model.ndim, step=(m,) * model.ndim,
        method=f"{WHAT[algo]} image restoration ({model.ndim}D) trained with napari-dlbio and CAREamics.",
        postprocessing=_postprocessing(model),
        citations=(*CITATIONS[algo], CAREAMICS),
        tags=["denoising", "restoration", algo, "careamics"],
        extra={"careamics": {"algorithm": algo}},
    )


def _stats(stats, which: str, n_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    means = np.broadcast_to(np.asarray(getattr(stats, f"{which}_means"), np.float64), (n_channels,))
    stds = np.broadcast_to(np.asarray(getattr(stats, f"{which}_stds"), np.float64), (n_channels,))
    return tuple(float(v) for v in means), tuple(float(v) for v in stds)


def _postprocessing(model) -> str:
    text = "The output is the restored image; no further step is needed."
    if model.settings.normalization.mode == "percentile":
        text += (" napari-dlbio (and the package's preprocessing) first maps each image's "
                 f"{model.settings.normalization.low:g} and {model.settings.normalization.high:g} percentiles to 0 "
                 "and 1; napari-dlbio maps the output back to the input's intensity range.")
    return text + (" napari-dlbio's Predict option `tta` (on by default) also averages the 8 flips/rotations "
                   "of the input.")


def export_bioimageio(model, path: str | Path, example: np.ndarray | None = None, **kwargs) -> Path:
    """Write ``model`` as a bioimage.io zip (the shared exporter; kept for scripts that call it here)."""
    from ...bioimageio_export import export_model

    return export_model(model, path, example=example, **kwargs)
