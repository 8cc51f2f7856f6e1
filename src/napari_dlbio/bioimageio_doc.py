"""The human side of a bioimage.io package: its README and its cover image.

The README says what a reader of the BioImage Model Zoo needs before trusting a
model: what it was trained on, how well it did on held-out data, how the network's
outputs become the result (the post-processing that bioimage.io cannot run), and
how to use it in napari-dlbio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bioimageio_parts import BioimageioParts
from .formatting import metric_parts


def write_readme(model, parts: BioimageioParts, path: Path) -> Path:
    info = model.info
    lines = [f"# {info.name}", "", parts.method, "", "## Training data", "", *_training(info.provenance or {}), "",
             "## Validation", "", _validation(info.metrics or {}), "", "## Inputs", "", _inputs(model, parts), "",
             "## Outputs and post-processing", "", *[f"- `{t.name}`: {t.description}" for t in parts.outputs], "",
             parts.postprocessing, "", "## Use in napari-dlbio", "",
             "Open the zip in the Predict dock (Model folder or zip) or run "
             f"`napari-dlbio predict --model {info.name}.zip images/ --out results/`; "
             "it restores the model with its thresholds, settings and provenance from the attached `model.json`. "
             "`napari-dlbio train --from MODEL.zip ...` fine-tunes it.", "",
             "## References", "", *[f"- {c['text']}" + (f" doi:{c['doi']}" if c.get("doi") else "")
                                     for c in parts.citations], ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _training(prov: dict) -> list[str]:
    sources = prov.get("sources") or []
    if not sources:
        return ["Not recorded."]
    out = [f"- image `{s.get('image')}`" + (f", labels `{s['labels']}`" if s.get("labels") else "")
           + (f", target `{s['target']}`" if s.get("target") else "") + (f", axes {s['axes']}" if s.get("axes") else "")
           for s in sources[:20]]
    if len(sources) > 20:
        out.append(f"- … and {len(sources) - 20} more")
    counts = [f"{prov[k]} {w}" for k, w in (("n_train", "training items"), ("n_val", "validation items"),
                                            ("n_objects", "annotated objects")) if prov.get(k)]
    if counts:
        out.append(f"\n{', '.join(counts)}.")
    return out


def _validation(metrics: dict) -> str:
    parts = metric_parts(metrics)
    return ("On held-out items: " + ", ".join(parts) + ".") if parts else "No validation metrics were recorded."


def _inputs(model, parts: BioimageioParts) -> str:
    n = parts.normalization
    text = f"{model.n_channels} channel(s), {model.ndim}D; sizes {parts.min_shape} + k x {parts.step} per axis. "
    if n.kind.startswith("percentile"):
        text += (f"Each image is normalised so that its {n.low:g} and {n.high:g} percentiles map to 0 and 1"
                 f"{' per channel' if n.per_channel else ''} (the package's preprocessing does this).")
    if "mean_std" in n.kind:
        text += " Then the training set's mean and standard deviation are applied (preprocessing too)."
    return text


def write_cover(x: np.ndarray, y: np.ndarray, parts: BioimageioParts, path: Path) -> Path:
    """Input (first channel, middle plane) next to the first output channel, as a PNG."""
    from skimage.io import imsave
    from skimage.transform import resize

    a, b = _plane(x), _plane(y[0])
    if b.shape != a.shape:
        b = resize(b, a.shape, order=0)
    imsave(path, (np.concatenate([_stretch(a), np.full((a.shape[0], 4), 255, np.uint8), _stretch(b)], 1)),
           check_contrast=False)
    return path


def _plane(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, np.float32)[0]
    while t.ndim > 2:
        t = t[t.shape[0] // 2]
    return t


def _stretch(p: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(p, [1, 99.8])
    return (np.clip((p - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
