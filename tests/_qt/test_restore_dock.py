"""The Train dock with CARE: a target image layer instead of labels, then "Predict with this model"."""

import numpy as np
import pytest
from qt_helpers import dock, finished, set_form

# The job process starts (torch, CAREamics) and trains 48 steps: about 40 s on 2 cores.
pytestmark = [pytest.mark.gui, pytest.mark.slow]
pytest.importorskip("careamics")

FAST = {"epochs": 6, "steps_per_epoch": 8, "patch_size": 32, "batch_size": 8, "base_filters": 16,
        "learning_rate": 5e-3, "val_fraction": 0.3}


def _pair():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    clean = np.zeros((128, 96), np.float32)  # 128 rows: the last 38 are held out for validation
    clean[rng.integers(8, 120, 12), rng.integers(8, 88, 12)] = 1.0
    clean = (20 + 200 * ndi.gaussian_filter(clean, 4) / ndi.gaussian_filter(clean, 4).max()).astype(np.float32)
    noisy = (rng.poisson(clean * 0.25) / 0.25 + rng.normal(0, 4, clean.shape)).astype(np.float32)
    return noisy, clean


def test_care_in_the_train_dock(make_napari_viewer, qtbot, records):
    viewer = make_napari_viewer()
    noisy, clean = _pair()
    viewer.add_image(noisy, name="blobs", scale=(0.5, 0.5), translate=(2.0, 3.0))
    viewer.add_image(clean, name="clean")
    viewer.add_labels(np.zeros(noisy.shape, np.int32), name="gt")
    w = dock(viewer, "Train")
    w.backend.setCurrentIndex(w.backend.findData("n2v"))
    w.image.set_layer("blobs")
    # Noise2Void (the default) needs no target: the picker is hidden.
    assert w.target.isHidden() and not w.data.needs_target()
    set_form(w.form, {"algorithm": "care", **FAST})
    assert not w.target.isHidden() and w.labels.isHidden()
    assert "clean, high-SNR image of the same field" in w.data.target_help.text()
    # Only image layers are offered as targets; none is chosen until the user picks one.
    assert "gt" not in [w.target.itemText(i) for i in range(w.target.count())]
    with pytest.raises(ValueError, match="choose a target image layer"):
        w.train_request()
    viewer.add_image(clean[:64], name="half")
    w.target.set_layer("half")
    with pytest.raises(ValueError, match=r"target 'half' has shape \(64, 96\) but image 'blobs' has \(128, 96\)"):
        w.train_request()
    w.target.set_layer("clean")
    w.name.setText("blobs-care")
    w.train()
    qtbot.waitUntil(finished(w.runner), timeout=120_000)
    assert w.outcome is not None, w.status.text()
    assert "loss on held-out pairs" in w.metrics.text() and "PSNR" in w.metrics.text()
    assert w.plot.n_points >= 6
    w.predict_btn.click()
    qtbot.waitUntil(finished(w.runner), timeout=60_000)
    out = viewer.layers["blobs_care"]
    assert out.data.dtype == np.float32 and out.data.shape == noisy.shape
    assert tuple(out.scale) == (0.5, 0.5) and tuple(out.translate) == (2.0, 3.0)
    err = lambda x: float(np.mean((x - clean) ** 2))  # noqa: E731
    assert err(out.data) < err(noisy) / 4
    assert not records.errors, records.errors
    # Back to N2V: the target picker goes away again.
    set_form(w.form, {"algorithm": "n2v2"})
    assert w.target.isHidden() and not w.labels.isHidden()
