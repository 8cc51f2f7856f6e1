"""Write small official StarDist models and their outputs for the conversion tests.

Needs TensorFlow and the official ``stardist`` package, which napari-dlbio itself never
imports; run it in a separate environment, e.g.::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu stardist
    /tmp/tfvenv/bin/python scripts/make_stardist_reference.py tests/data/stardist

For 2D and 3D it trains a tiny StarDist model for a few steps on synthetic blobs (so the
weights are written by the package's own checkpointing, as real models are), reloads it
from its folder, and saves the official ``predict`` outputs (prob, dist) and
``predict_instances`` labels on a fixed input. The 3D model uses an anisotropic grid
(1, 2, 2) and three grid steps are avoided to keep the files well below 1 MB.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np


def blobs(shape, n, rng, radius):
    """Random non-overlapping balls: a float image with noise and instance labels."""
    grid = np.indices(shape).astype(np.float32)
    labels = np.zeros(shape, np.uint16)
    k = 0
    for _ in range(n * 20):
        c = [rng.uniform(radius, s - radius) for s in shape]
        r = rng.uniform(0.7, 1.2) * radius
        ball = sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= r**2
        if (labels[ball] > 0).any():
            continue
        k += 1
        labels[ball] = k
        if k == n:
            break
    img = (labels > 0).astype(np.float32) + rng.normal(0, 0.1, shape).astype(np.float32)
    return img, labels


def main(out: Path) -> None:
    from stardist import Rays_GoldenSpiral
    from stardist.models import Config2D, Config3D, StarDist2D, StarDist3D

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cases = {
        "ref2d": (
            StarDist2D,
            Config2D(n_rays=16, grid=(2, 2), n_channel_in=1, unet_n_depth=2, unet_n_filter_base=8,
                     net_conv_after_unet=16, train_patch_size=(64, 64), train_batch_size=2,
                     train_epochs=1, train_steps_per_epoch=3, train_tensorboard=False),
            (64, 64), (90, 70), 6, 6,
        ),
        "ref3d": (
            StarDist3D,
            Config3D(rays=Rays_GoldenSpiral(24), grid=(1, 2, 2), n_channel_in=1, unet_n_depth=1,
                     unet_n_filter_base=8, net_conv_after_unet=8, train_patch_size=(16, 32, 32),
                     train_batch_size=1, train_epochs=1, train_steps_per_epoch=2,
                     train_tensorboard=False),
            (16, 32, 32), (19, 36, 30), 4, 4,
        ),
    }
    for name, (Model, config, train_shape, test_shape, n, radius) in cases.items():
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        X, Y = zip(*[blobs(train_shape, n, rng, radius) for _ in range(3)])
        model = Model(config, name=name, basedir=str(out))
        model.train(list(X[:2]), list(Y[:2]), validation_data=(list(X[2:]), list(Y[2:])), seed=0)
        model.thresholds = {"prob": 0.5, "nms": 0.4}  # fixed, instead of optimising on noise
        from csbdeep.utils import save_json

        save_json({"prob": 0.5, "nms": 0.4}, str(folder / "thresholds.json"))
        for extra in ("weights_last.h5", "weights_now.h5", "logs"):
            p = folder / extra
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        model = Model(None, name=name, basedir=str(out))  # reload from the folder, as users do
        x, _ = blobs(test_shape, n, np.random.default_rng(1), radius)
        prob, dist = model.predict(x)
        labels, _ = model.predict_instances(x, prob_thresh=0.5, nms_thresh=0.4)
        np.savez_compressed(out / f"{name}_outputs.npz", x=x, prob=prob, dist=dist, labels=labels)
        print(name, "prob", prob.shape, float(prob.min()), float(prob.max()), "dist", dist.shape,
              "objects", int(labels.max()))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/stardist"))
