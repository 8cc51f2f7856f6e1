"""StarDist (PyTorch) quality and speed on real data; prints tables. Not run by pytest.

2D: trains with the CLI (``napari-dlbio train --backend stardist --minutes M``) on
``dsb2018/train`` and reports mean AP@0.5 on ``dsb2018/val``, next to the official
TensorFlow model of ``stardist-official-dsb`` (9 CPU minutes of official training),
converted to our network. 3D: trains on one half (along X) of the bundled
``test_image_nuclei_3d`` and segments the other half. Speed: prediction time of a
512x512 image and of the 3D volume, split into network and NMS/rendering.

    python benchmarks/bench_stardist.py --minutes 10 --minutes-3d 5

Measured 2026-11-23 on the shared 2-core CPU (1 torch thread, load 3-6): CLI --minutes 10
reached AP@0.5 0.772 / F1 0.859 on dsb2018/val (1550 steps); the official TF model trained
for 9 CPU minutes, converted, 0.736 / 0.829. A 512x512 image: 0.41 s network + 0.05 s NMS.
3D (5 minutes, 575 steps): AP@0.5 0.444 / F1 0.615 on the held-out half (32 objects, many
cut by the split); the 31x61x57 volume: 0.40 s network + 1.3 s NMS and polyhedra.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# On a CPU shared with other jobs, torch's default (one thread per core) spins at its
# barriers: a training step measured 2-6 s with 2 threads and 0.6 s with 1 thread here.
THREADS = 1


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    sys.stdout.flush()


def val_ap(model, folder: Path) -> tuple[float, float, float]:
    """Mean AP@0.5 and F1 over the validation images, and seconds per image."""
    from napari_dlbio.backends import get
    from napari_dlbio.data import list_images, read_image
    from napari_dlbio.metrics import mean_ap

    pred_settings = get("stardist").Predict()
    trues, preds = [], []
    t = time.monotonic()
    for p in list_images(folder / "images"):
        img = read_image(p).astype(np.float32)
        lab = read_image(folder / "masks" / p.name)
        res = model.predict(img[None], pred_settings, _ctx())
        trues.append(lab)
        preds.append(res["labels"])
    sec = (time.monotonic() - t) / max(1, len(trues))
    m = mean_ap(trues, preds)
    return m["ap"], m["f1"], sec


def _ctx():
    from napari_dlbio.jobs import JobContext

    return JobContext()


def timing(model, img: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """(network seconds, total seconds) for one item, best of ``repeats``."""
    from napari_dlbio.backends import get

    settings = get("stardist").Predict()
    x = model._normalize(img[None].astype(np.float32))
    model.predict(img[None].astype(np.float32), settings, _ctx())  # warm-up: first-call allocations
    net, total = [], []
    for _ in range(repeats):
        t = time.monotonic()
        model.network_output(x, settings, _ctx())
        net.append(time.monotonic() - t)
        t = time.monotonic()
        model.predict(img[None].astype(np.float32), settings, _ctx())
        total.append(time.monotonic() - t)
    return min(net), min(total)


def bench_2d(minutes: float, work: Path) -> None:
    from napari_dlbio import tasks
    from napari_dlbio.backends import get

    dsb = DATA / "dsb2018"
    out = work / "sd-dsb"
    cmd = [sys.executable, "-m", "napari_dlbio", "train", "--backend", "stardist",
           "--images", str(dsb / "train" / "images"), "--labels", str(dsb / "train" / "masks"),
           "--out", str(out), "--minutes", str(minutes), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    print(f"$ OMP_NUM_THREADS={THREADS}", " ".join(cmd[1:]), flush=True)
    t = time.monotonic()
    subprocess.run(cmd, check=True, env=env)
    train_s = time.monotonic() - t
    ours = tasks.load_model(out)
    info = ours.info
    official = get("stardist").pretrained(str(DATA / "stardist-official-dsb"))
    rows = []
    for name, model, extra in (
        (f"ours, CLI --minutes {minutes:g}", ours,
         f"{info.metrics['training']['epochs']} epochs x {ours.settings.steps_per_epoch} steps, "
         f"{train_s:.0f} s wall, thresholds prob {ours.thresholds['prob']:.2f} nms {ours.thresholds['nms']}"),
        ("official TF (9 CPU min), converted", official,
         f"thresholds prob {official.thresholds['prob']:.2f} nms {official.thresholds['nms']}"),
    ):
        ap, f1, sec = val_ap(model, dsb / "val")
        rows.append([name, ap, f1, f"{sec:.2f}", extra])
    table("2D: dsb2018/val (30 images), mean over images",
          ["model", "AP@0.5", "F1", "s/image", "notes"], rows)
    budget = minutes * 60
    print(f"CLI wall time (start-up, data, training, tuning, evaluation, saving): {train_s:.0f} s for a "
          f"{budget:.0f} s budget = {train_s / budget:.3f}x, {'within' if train_s <= 1.05 * budget else 'OVER'} 1.05x")

    from stardist.data import test_image_nuclei_2d

    img = test_image_nuclei_2d()
    rows = []
    for name, model in (("ours", ours), ("official converted", official)):
        net, total = timing(model, img)
        rows.append([name, f"{net:.3f}", f"{total:.3f}", f"{total - net:.3f}"])
    table("2D speed: one 512x512 image (best of 3)",
          ["model", "network s", "total s", "NMS + labels s"], rows)


def bench_3d(minutes: float) -> None:
    from stardist.data import test_image_nuclei_3d

    from napari_dlbio import data, tasks
    from napari_dlbio.backends import get
    from napari_dlbio.metrics import match

    be = get("stardist")
    img, lab = test_image_nuclei_3d(return_mask=True)
    half = img.shape[2] // 2
    tr_img, tr_lab = img[:, :, :half], lab[:, :, :half]
    te_img, te_lab = img[:, :, half:], lab[:, :, half:]
    td = data.from_arrays(tr_img.astype(np.float32), tr_lab.astype(np.int32), axes="ZYX", ndim=3)
    # A lighter 3D network than the default (width 32, 96 rays, batch 4): a CPU budget of
    # minutes buys a few hundred steps only; thresholds are tuned on the training half.
    settings = be.Settings(minutes=minutes, epochs=10_000, steps_per_epoch=25, val_fraction=0.0,
                           width=16, features=64, n_rays=96, grid_z=1, batch_size=2, learning_rate=2e-3)
    t = time.monotonic()
    out = tasks.train("stardist", td, settings, None)
    train_s = time.monotonic() - t
    model = out.model
    pred = model.predict(te_img[None].astype(np.float32), be.Predict(), _ctx())["labels"]
    m = match(te_lab, pred)
    ep = out.fit.epochs
    table(
        "3D: test_image_nuclei_3d, trained on X < half, tested on X >= half",
        ["train s", "epochs", "thresholds", "objects true/pred", "AP@0.5", "F1"],
        [[f"{train_s:.0f}", ep, f"prob {model.thresholds['prob']:.2f} nms {model.thresholds['nms']}",
          f"{m.n_true}/{m.n_pred}", m.ap, m.f1]],
    )
    net, total = timing(model, img)
    table(f"3D speed: one {img.shape} volume (best of 3)", ["network s", "total s", "NMS + labels s"],
          [[f"{net:.3f}", f"{total:.3f}", f"{total - net:.3f}"]])


def main() -> None:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="2D training budget (CLI --minutes)")
    ap.add_argument("--minutes-3d", type=float, default=3.0, help="3D training budget")
    ap.add_argument("--skip-2d", action="store_true")
    ap.add_argument("--skip-3d", action="store_true")
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads (default 1: shared CPU)")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the shared data in {DATA}")
    import torch

    THREADS = args.threads
    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("NAPARI_DLBIO_HOME", tmp)
        if not args.skip_3d:
            bench_3d(args.minutes_3d)
        if not args.skip_2d:
            bench_2d(args.minutes, Path(tmp))
    print(f"\nTensorFlow imported: {'tensorflow' in sys.modules}")


if __name__ == "__main__":
    main()
