"""The Evaluate dock: two models and a labels layer against annotated slices; table, errors, CSV."""

import csv
import os
import shutil

import numpy as np
import pytest
from qt_helpers import dock, finished
from scipy import ndimage as ndi

from napari_dlbio import samples, store

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two tiny U-Nets in folders (copied into each test's store as needed)."""
    pytest.importorskip("torch")
    from napari_dlbio import backends, data, tasks

    img, lab = samples.nuclei_2d((192, 192), seed=1)
    out = []
    for name, epochs in (("longer", 5), ("shorter", 1)):
        settings = backends.get("unet").Settings(epochs=epochs, steps_per_epoch=8, batch_size=4,
                                                 patch_size=64, depth=2, base_width=8, val_patches=2)
        path = tmp_path_factory.mktemp("m") / name
        tasks.train("unet", data.from_arrays(img, lab), settings, save_to=path)
        out.append(path)
    return out


def _stack():
    pairs = [samples.nuclei_2d((128, 128), seed=30 + k) for k in range(3)]
    img = np.stack([p[0] for p in pairs])
    lab = np.stack([p[1] for p in pairs])
    truth = lab.copy()
    truth[1] = 0                                     # slice 1 not annotated: it must not count
    other = np.stack([ndi.grey_erosion(x, 7) for x in lab])
    return img, truth, other


def test_evaluate_dock_ranks_two_models_and_a_layer(make_napari_viewer, qtbot, two_models, tmp_path, records):
    viewer = make_napari_viewer()
    img, truth, other = _stack()
    viewer.add_image(img, name="cells", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth, name="truth", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(other, name="other tool", scale=(2.0, 0.5, 0.5))
    shutil.copytree(two_models[0], store.store_root() / "longer")   # a saved model, listed by the dock
    w = dock(viewer, "Evaluate")
    w.truth_box.labels.set_layer("truth")
    w.truth_box.image.set_layer("cells")
    assert "z=0, 2" in w.truth_box.summary.text()
    w.candidates_box.refresh()
    w.candidates_box.tick("longer", "other tool")
    w.add_model_candidate(str(two_models[1]))                   # as the Models dock does
    w.run()
    qtbot.waitUntil(finished(w.runner), timeout=120_000)
    assert not records.errors, records.errors
    ranked = [c.name for c in w.ranked()]
    assert sorted(ranked) == ["longer", "other tool", "shorter"]
    aps = [c.mean()["AP@0.50"] for c in w.ranked()]
    # Ranked best first; the 5-epoch model finds objects (about 0.3 with these tiny settings), the
    # 1-epoch one hardly any: the ranking, not a quality figure, is what this test is about.
    assert aps == sorted(aps, reverse=True) and aps[0] > 0.15
    assert ranked.index("longer") < ranked.index("shorter")
    assert [w.table.item(r, 0).text() for r in range(w.table.rowCount())] == ranked
    headers = [w.table.horizontalHeaderItem(c).text() for c in range(5)]
    assert headers == ["candidate", "AP@0.5", "AP@0.75", "F1", "PQ"]
    assert [w.items.item(r, 0).text() for r in range(w.items.rowCount())] == ["z=0", "z=2"]
    assert len(w.plot.curves) == 3 and len(w.plot.curves[0][1]) == 10

    w.table.selectRow(ranked.index("other tool"))
    layer = w.show_errors()
    assert layer.name == "other tool errors" and layer.data.shape == truth.shape
    assert tuple(layer.scale) == (2, .5, .5)
    f = layer.features
    assert {"label", "error", "area"} <= set(f.columns) and len(f) == int(layer.data.max()) > 0
    assert set(f["error"]) <= {"false positive", "false negative", "merge", "split"}
    assert layer.data[1].max() == 0                              # nothing on the unannotated slice
    assert viewer.dims.point[0] in (0.0, 4.0)                     # the view went to a slice with errors
    for lab, area in zip(f["label"], f["area"]):
        assert (layer.data == lab).sum() == area
    assert np.array_equal(viewer.layers["truth"].data, truth)   # the user's layers untouched

    rows = list(csv.DictReader(open(w.export_csv(str(tmp_path / "e.csv")))))
    assert [(r["candidate"], r["item"]) for r in rows if r["item"] == "all"] == [(n, "all") for n in ranked]
    assert len(rows) == 3 * 3
    assert [e[0] for e in w.candidates_box._entries()] == ["model: shorter", "model: longer (unet)",
                                                           "layer: other tool"]   # not the truth, nor errors
    if os.environ.get("DLBIO_SHOT"):
        viewer.window._qt_window.resize(1600, 1000)
        qtbot.wait(500)
        viewer.window._qt_window.grab().save(os.environ["DLBIO_SHOT"])
        w.grab().save(os.environ["DLBIO_SHOT"].replace(".png", "_dock.png"))


def test_evaluate_dock_bad_input_is_one_message(make_napari_viewer, qtbot, records):
    viewer = make_napari_viewer()
    img, truth, other = _stack()
    viewer.add_image(img, name="cells")
    viewer.add_labels(np.zeros_like(truth), name="empty")
    viewer.add_labels(other[:, :100], name="cut")
    w = dock(viewer, "Evaluate")
    w.truth_box.labels.set_layer("empty")
    w.candidates_box.tick("cut")
    w.run()
    assert not w.runner.running and "nothing is annotated" in records.errors[-1]
    viewer.layers["empty"].data = truth
    w.run()
    assert not w.runner.running and "shape (3, 100, 128)" in records.errors[-1]


def test_evaluate_dock_scores_denoised_layers_against_a_clean_reference(make_napari_viewer, qtbot, records):
    """A clean image as truth: image layers are the candidates, ranked by PSNR; the AP plot stays empty."""
    from napari_dlbio.metrics import psnr

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    clean = np.stack([samples.nuclei_2d((96, 96), seed=40 + k)[0] for k in range(2)]).astype(np.float32)
    noisy = clean + rng.normal(0, 20, clean.shape).astype(np.float32)
    viewer.add_image(noisy, name="noisy")
    viewer.add_image(clean, name="clean")
    viewer.add_image(ndi.uniform_filter(noisy, (1, 3, 3)), name="smoothed")
    viewer.add_labels(np.zeros(clean.shape, np.int32), name="painting")   # labels are preferred as truth
    w = dock(viewer, "Evaluate")
    assert w.truth_box.labels.currentText() == "painting"
    w.truth_box.labels.set_layer("clean")
    assert "PSNR" in w.truth_box.summary.text()
    assert [e[0] for e in w.candidates_box._entries()] == ["layer: noisy", "layer: smoothed"]
    w.candidates_box.tick("noisy", "smoothed")
    w.run()
    qtbot.waitUntil(finished(w.runner), timeout=60_000)
    assert not records.errors, records.errors
    assert [c.name for c in w.ranked()] == ["smoothed", "noisy"] and w.sort_metric == "PSNR"
    headers = [w.table.horizontalHeaderItem(c).text() for c in range(w.table.columnCount())]
    assert headers[:3] == ["candidate", "PSNR", "SSIM"] and w.plot.curves == [] and w.plot.isHidden()
    expected = np.mean([psnr(c, n, float(np.ptp(c))) for c, n in zip(clean, noisy)])
    assert w.comparison.get("noisy").mean()["PSNR"] == pytest.approx(expected, abs=1e-4)
    assert not w.errors_btn.isEnabled()
