"""``napari-dlbio demo``: train a small U-Net on synthetic nuclei and score it."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..jobs import Progress
from .common import EXIT_CANCELLED, CLIError, _log
from .progress import ProgressBar, train_with_progress

DEMO_TRAIN_SEEDS = (1, 2, 3, 4)
DEMO_TEST_SEED = 100
DEMO_ENOUGH_STEPS = 150


def demo_settings(minutes: float):
    """Small U-Net settings that learn synthetic nuclei within about a minute on a laptop CPU."""
    from ..backends import get

    be = get("unet")
    return be.Settings(
        minutes=minutes,
        epochs=1000,
        steps_per_epoch=20,
        batch_size=4,
        patch_size=128,
        base_width=16,
        depth=3,
        val_fraction=0.25,
        seed=0,
    )


def cmd_demo(args) -> int:
    import numpy as np
    import tifffile

    from .. import tasks

    if args.minutes <= 0:
        raise CLIError("--minutes must be positive")
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    log = _log(args)
    data, test_img, test_gt = _write_data(out)
    log(
        f"synthetic data written to {out}; training a small U-Net for {args.minutes:g} min "
        "(Ctrl-C stops early and keeps the best model)"
    )
    bar = ProgressBar("train", enabled=not args.quiet)
    steps = [0]

    def on_progress(p: Progress) -> None:
        steps[0] += "loss" in p.metrics  # one report with a loss per training step
        bar(p)

    model_dir = out / "model"
    settings = demo_settings(args.minutes)
    outcome = train_with_progress(on_progress, bar, log, "unet", data, settings, str(model_dir))
    if outcome is None:
        return EXIT_CANCELLED
    pred = tasks.predict(outcome.model, test_img, "YX").outputs["labels"]
    tifffile.imwrite(out / "test_prediction.tif", np.asarray(pred, np.int32))
    _print_results(args, out, outcome, steps[0], test_gt, pred)
    if args.gui:
        _demo_gui(test_img, test_gt, pred)
    return 0


def _write_data(out: Path):
    """Synthetic training pairs and a test pair, written to ``out``: (data, test image, test labels)."""
    import tifffile

    from .. import data as data_mod
    from .. import samples

    pairs = [samples.nuclei_2d((256, 256), seed=s) for s in DEMO_TRAIN_SEEDS]
    test_img, test_gt = samples.nuclei_2d((384, 384), seed=DEMO_TEST_SEED)
    for k, (img, lab) in enumerate(pairs):
        tifffile.imwrite(out / f"train_image_{k}.tif", img)
        tifffile.imwrite(out / f"train_labels_{k}.tif", lab)
    tifffile.imwrite(out / "test_image.tif", test_img)
    tifffile.imwrite(out / "test_labels.tif", test_gt)
    data = data_mod.combine(
        [
            data_mod.from_arrays(
                i, lab, "YX", name=f"train_image_{k}.tif", labels_name=f"train_labels_{k}.tif"
            )
            for k, (i, lab) in enumerate(pairs)
        ]
    )
    return data, test_img, test_gt


def _print_results(args, out: Path, outcome, steps: int, test_gt, pred) -> None:
    from ..metrics import match

    m = match(test_gt, pred)
    fit = outcome.fit
    print(
        f"trained {steps} step(s) ({fit.epochs} epoch(s)) in {fit.seconds:.0f} s ({fit.stopped}); "
        f"model: {outcome.path}"
    )
    print(f"test image: {m.n_true} true, {m.n_pred} predicted objects; AP@0.5 = {m.ap:.3f}, F1 = {m.f1:.3f}")
    if steps < DEMO_ENOUGH_STEPS:
        # About 100 steps are needed for AP@0.5 above 0.6 on these images; a busy or slow CPU gets fewer.
        print(
            f"note: only {steps} training step(s) fit into {args.minutes:g} min on this machine; "
            f"about {DEMO_ENOUGH_STEPS}+ are needed for a good result: try --minutes "
            f"{max(2, math.ceil(args.minutes * DEMO_ENOUGH_STEPS / max(steps, 1)))}"
        )
    print(f"files in {out}: test_image.tif, test_labels.tif, test_prediction.tif, train_*.tif, model/")


def _demo_gui(image, gt, pred) -> None:
    try:
        import napari
    except ImportError as exc:
        raise CLIError(f"--gui needs napari with a Qt binding: {exc}") from None
    viewer = napari.Viewer(title="napari-dlbio demo")
    viewer.add_image(image, name="test_image")
    viewer.add_labels(gt, name="ground_truth", visible=False)
    viewer.add_labels(pred, name="prediction")
    for widget in ("Train", "Predict"):
        try:
            viewer.window.add_plugin_dock_widget("napari-dlbio", widget)
        except Exception as exc:  # noqa: BLE001 - the layers are still worth showing
            print(f"could not open the {widget} dock: {exc}", file=sys.stderr)
    napari.run()
