"""Supervised restoration on real images: CARE and Noise2Noise vs Noise2Void and the best Gaussian.

Clean DSB2018 images get Poisson-Gaussian noise with a fixed seed, as in
``bench_n2v.py`` (same gain, read noise and seed, so its validation images are
the same noisy images). Three models train through the command line with the
backend's defaults and the same time budget (``--minutes M`` each) on the
``train`` images:

- N2V: the noisy images alone (``--algorithm n2v2``, the default);
- N2N: pairs of two independent noisy copies of each image (``--algorithm n2n``);
- CARE: pairs noisy -> clean (``--algorithm care``);

and are applied with the default prediction settings (test-time flip/rotation
averaging on) to the ``val`` images. The reference is a Gaussian filter whose
sigma is chosen per image *with the clean image in hand*.

    python benchmarks/bench_restore.py [--minutes 5] [--images 10] [--train-images 100]

Prints a Markdown table of PSNR (dB) per validation image and the mean.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_n2v import GAIN, READ_NOISE, SEED, best_gaussian, load  # noqa: E402

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "train" / "images"
ALGORITHMS = ("n2v", "n2n", "care")


def noisy_copy(clean: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.poisson(c * GAIN) / GAIN + rng.normal(0, READ_NOISE, c.shape)).astype(np.float32) for c in clean]


def write_training_folders(work: Path, n: int) -> None:
    """train/{clean,noisy,second}/<id>.tif: the clean image and two independent noisy copies."""
    import tifffile

    files = sorted(TRAIN.glob("*.tif"))[:n]
    if not files:
        sys.exit(f"no images in {TRAIN}")
    clean = [tifffile.imread(f).astype(np.float32) for f in files]
    folders = {"clean": clean, "noisy": noisy_copy(clean, SEED + 1), "second": noisy_copy(clean, SEED + 2)}
    for sub, arrays in folders.items():
        (work / sub).mkdir(parents=True)
        for f, a in zip(files, arrays):
            tifffile.imwrite(work / sub / f"{f.stem}.tif", a)


def train(work: Path, algorithm: str, minutes: float, threads: int, extra: list[str]) -> tuple[float, list[str]]:
    """Train one model through the CLI; its wall time and the summary lines it printed."""
    targets = {"n2v": [], "n2n": ["--targets", str(work / "second")], "care": ["--targets", str(work / "clean")]}
    env = dict(os.environ, NAPARI_DLBIO_HOME=str(work / "home"), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "napari_dlbio", "train", "--backend", "n2v", "--images", str(work / "noisy"),
           *targets[algorithm], "--algorithm", "n2v2" if algorithm == "n2v" else algorithm,
           "--out", str(work / algorithm), "--minutes", str(minutes), "-q", *extra]
    t0 = time.monotonic()
    run = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{algorithm} training failed ({run.returncode}):\n{run.stdout}\n{run.stderr[-3000:]}")
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith(("training:", "validation:"))]
    return time.monotonic() - t0, lines


def evaluate(work: Path, clean: list, noisy: list) -> list[list[float]]:
    """Per validation image: PSNR of noisy, best Gaussian, then each model (with TTA)."""
    from napari_dlbio import tasks
    from napari_dlbio.backends import get
    from napari_dlbio.metrics import psnr

    models = {a: tasks.load_model(work / a) for a in ALGORITHMS}
    predict = get("n2v").Predict()
    rows = []
    for c, n in zip(clean, noisy):
        row = [psnr(c, n), best_gaussian(c, n)[0]]
        row += [psnr(c, tasks.predict(models[a], n, "YX", predict).outputs["image"]) for a in ALGORITHMS]
        rows.append(row)
    return rows


def report(args, names, rows, log: dict) -> None:
    print(f"# Restoration on {len(rows)} DSB2018 val images, Poisson(gain {GAIN}) + Gaussian(sigma {READ_NOISE}), "
          f"seed {SEED}; trained on {args.train_images} DSB2018 train images, --minutes {args.minutes:g} each "
          f"(OMP_NUM_THREADS={args.threads})")
    for a in ALGORITHMS:
        secs, lines = log[a]
        print(f"{a}: {secs:.0f} s wall; " + "; ".join(ln.strip() for ln in lines))
    print()
    print("| image | noisy | best Gaussian | N2V | N2N | CARE |")
    print("|---|---|---|---|---|---|")
    for name, r in zip(names, rows):
        print(f"| {name[:12]} | " + " | ".join(f"{v:.2f}" for v in r) + " |")
    m = np.mean(rows, axis=0)
    print("| **mean** | " + " | ".join(f"{v:.2f}" for v in m) + " |")
    print()
    print(f"CARE - N2V: {m[4] - m[2]:+.2f} dB (goal >= +1); N2N - N2V: {m[3] - m[2]:+.2f} dB (goal >= 0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="training time budget of each model")
    ap.add_argument("--images", type=int, default=10, help="number of DSB validation images scored")
    ap.add_argument("--train-images", type=int, default=100, help="number of DSB train images trained on")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (1: the CPU is shared)")
    ap.add_argument("--extra", nargs="*", default=[], help="extra CLI options for training, e.g. --patch-size 32")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    names, clean, noisy = load(args.images)
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    try:
        write_training_folders(work, args.train_images)
        log = {a: train(work, a, args.minutes, args.threads, args.extra) for a in ALGORITHMS}
        report(args, names, evaluate(work, clean, noisy), log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
