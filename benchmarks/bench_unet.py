"""U-Net quality on DSB2018 nuclei: train with the CLI's defaults for a time budget, score on val.

    python benchmarks/bench_unet.py [--minutes 5] [--data ../shared/data/dsb2018] [--model DIR]

Trains through the command line exactly as a user would (``napari-dlbio train --backend
unet ... --minutes 5``; falls back to ``tasks.train`` if the CLI is missing), predicts
every validation image with ``tasks.predict`` and prints AP@0.5 (stardist's
"accuracy": TP / (TP + FP + FN)) and F1 next to a classical Otsu + watershed baseline.
``--model DIR`` scores an existing model folder without training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dsb2018"


def otsu_watershed(image: np.ndarray) -> np.ndarray:
    """The classical baseline: Otsu foreground, seeds from distance-transform maxima, watershed."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    img = gaussian(image.astype(np.float32), 1.0)
    fg = img > threshold_otsu(img)
    fg = ndi.binary_fill_holes(fg)
    dist = ndi.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=5, labels=ndi.label(fg)[0], exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=fg).astype(np.int32)


def train_cli(data: Path, out: Path, minutes: float) -> float:
    cmd = [
        "napari-dlbio", "train", "--backend", "unet",
        "--images", str(data / "train" / "images"), "--labels", str(data / "train" / "masks"),
        "--out", str(out), "--minutes", str(minutes), "--overwrite",
    ]
    exe = shutil.which("napari-dlbio") or str(Path(sys.executable).with_name("napari-dlbio"))
    start = time.monotonic()
    if Path(exe).exists():
        print("$", " ".join(cmd), flush=True)
        subprocess.run([exe, *cmd[1:]], check=True)
    else:  # no CLI installed: the same call the CLI makes
        from napari_dlbio import data as data_mod
        from napari_dlbio import tasks
        from napari_dlbio.backends import get

        td = data_mod.from_folders(data / "train" / "images", data / "train" / "masks")
        tasks.train("unet", td, get("unet").Settings(minutes=minutes), out)
    return time.monotonic() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", type=Path, help="score this model folder instead of training one")
    args = ap.parse_args(argv)
    if not (args.data / "val" / "images").is_dir():
        print(f"no DSB2018 data at {args.data}; see ../shared/data/README.md")
        return 1

    from napari_dlbio import data as data_mod
    from napari_dlbio import tasks
    from napari_dlbio.metrics import mean_ap

    tmp = None
    wall = None
    if args.model is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-unet-"))
        model_dir = tmp / "unet-dsb"
        wall = train_cli(args.data, model_dir, args.minutes)
    else:
        model_dir = args.model
    info = json.loads((model_dir / "model.json").read_text())
    training = info["metrics"].get("training", {})
    model = tasks.load_model(model_dir)

    val = data_mod.from_folders(args.data / "val" / "images", args.data / "val" / "masks")
    truths = [s.target for s in val.samples]
    start = time.monotonic()
    preds = [tasks.predict(model, s.image[0]).outputs["labels"] for s in val.samples]
    t_pred = time.monotonic() - start
    unet = mean_ap(truths, preds)
    start = time.monotonic()
    base = mean_ap(truths, [otsu_watershed(s.image[0]) for s in val.samples])
    t_base = time.monotonic() - start

    print()
    print(f"DSB2018 val: {len(truths)} images; U-Net settings: depth {info['settings']['depth']}, "
          f"width {info['settings']['base_width']}, patch {info['settings']['patch_size']}, "
          f"batch {info['settings']['batch_size']}")
    print(f"{'method':<22}{'AP@0.5':>8}{'F1':>8}{'train s':>9}{'epochs':>8}{'predict s':>11}")
    print(f"{'U-Net (' + str(args.minutes if wall else '?') + ' min)':<22}{unet['ap']:>8.3f}{unet['f1']:>8.3f}"
          f"{training.get('seconds', float('nan')):>9.0f}{training.get('epochs', 0):>8d}{t_pred:>11.1f}")
    print(f"{'Otsu + watershed':<22}{base['ap']:>8.3f}{base['f1']:>8.3f}{'-':>9}{'-':>8}{t_base:>11.1f}")
    if wall is not None:
        budget = args.minutes * 60
        print(f"(CLI wall time incl. start-up, data loading, tuning, evaluation and saving: {wall:.0f} s for a "
              f"{budget:.0f} s budget = {wall / budget:.3f}x, {'within' if wall <= 1.05 * budget else 'OVER'} "
              f"1.05x; stopped: {training.get('stopped')})")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
