"""GUI tests of the Models dock (the model library): the card, rename/duplicate/delete, evaluate."""

from pathlib import Path

import pytest
from qt_helpers import dock
from qtpy.QtWidgets import QInputDialog, QMessageBox

from napari_dlbio import backends, store

pytestmark = pytest.mark.gui


def _save(name: str, **changes) -> Path:
    """A saved U-Net as training writes it (settings, provenance, metrics), without training."""
    settings = backends.spec("unet").Settings(epochs=6, depth=2, base_width=8).model_dump(mode="json")
    info = store.ModelInfo(
        path=Path("."), name=name, backend="unet", settings=settings,
        provenance={"sources": [{"image": "nuclei", "labels": "gt", "axes": "ZYX", "shape": [3, 64, 64]}],
                    "items": [{"Z": 0}, {"Z": 2}], "n_items": 2, "n_objects": 69, "n_train": 2, "n_val": 1},
        metrics={"n_val": 1, "ap50": 0.875, "f1": 0.9333,
                 "training": {"epochs": 6, "best_epoch": 5, "best_loss": 0.79, "stopped": "completed",
                              "seconds": 125.0}},
        **changes)
    return store.save(info, lambda f: (f / "weights.pt").write_bytes(b"w"), name)


def _answer(monkeypatch, text: str | None) -> list:
    """Patch the name dialog: type ``text`` (None: cancel); returns the prompts shown."""
    asked = []

    def get_text(parent, title, prompt, **kw):
        asked.append((title, kw.get("text")))
        return (text or "", text is not None)

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(get_text))
    return asked


def test_card_shows_backend_data_metrics_and_settings(make_napari_viewer):
    _save("nuclei-unet", created="2026-12-01T09:30:00+00:00")
    w = dock(make_napari_viewer(), "Models")
    assert w.names() == ["nuclei-unet"] and w.info().name == "nuclei-unet"
    card = w.card
    assert "nuclei-unet" in card.title.text()
    assert "U-Net (napari-dlbio) · 2D · 1 channel" in card.fact("Backend")
    assert card.fact("Trained on") == "nuclei + gt"
    assert "2 annotated slices · 69 objects" in card.fact("Annotated")
    assert "AP@0.5 0.875 · F1 0.933" in card.fact("Validation")
    assert card.fact("Training") == "2:05 min · 6 epochs · kept epoch 5"
    assert card.fact("Saved").startswith("2026-12-0")
    basic, advanced = dict(card.basic.rows()), dict(card.advanced_table.rows())
    assert (basic["epochs"], basic["depth"], basic["base width"], basic["time budget (min)"]) == (
        "6", "2", "8", "no limit")
    assert "seed" in advanced and "normalization low" in advanced and "seed" not in basic
    assert not card.advanced.isExpanded()  # advanced settings start folded
    assert w.export_btn.isEnabled() and "bioimage.io" in w.export_btn.toolTip()   # U-Nets export


def test_rename_and_duplicate_change_the_store_and_the_list(make_napari_viewer, monkeypatch):
    _save("a")
    w = dock(make_napari_viewer(), "Models")
    _answer(monkeypatch, "b")
    w.rename_btn.click()
    assert [i.name for i in store.list_models()] == ["b"] and w.names() == ["b"]
    assert w.info().name == "b" and (store.store_root() / "b" / "weights.pt").is_file()
    asked = _answer(monkeypatch, "b-copy")
    w.duplicate_btn.click()
    assert asked == [("Duplicate model", "b-copy")]  # a free name is offered
    assert sorted(i.name for i in store.list_models()) == ["b", "b-copy"]
    assert w.info().name == "b-copy" and sorted(w.names()) == ["b", "b-copy"]
    assert w.card.fact("Copied from") == "b"
    _answer(monkeypatch, None)  # cancelled: nothing changes
    w.rename_btn.click()
    assert sorted(i.name for i in store.list_models()) == ["b", "b-copy"]


def test_a_taken_name_is_refused_with_a_message(make_napari_viewer, monkeypatch, records):
    _save("a")
    _save("b")
    w = dock(make_napari_viewer(), "Models")
    w.select("a")
    _answer(monkeypatch, "b")
    w.rename_btn.click()
    assert "'b' already exists" in w.status.text() and any("already exists" in e for e in records.errors)
    assert sorted(i.name for i in store.list_models()) == ["a", "b"] and w.info().name == "a"


def test_delete_asks_first(make_napari_viewer, monkeypatch):
    _save("a")
    keep = _save("b")
    w = dock(make_napari_viewer(), "Models")
    w.select("a")
    asked = []

    def answer(button):
        def question(parent, title, text, *args):
            asked.append(text)
            return button
        monkeypatch.setattr(QMessageBox, "question", staticmethod(question))

    answer(QMessageBox.StandardButton.Cancel)
    w.delete_btn.click()
    assert "Delete the model 'a'" in asked[0] and (store.store_root() / "a").is_dir()
    assert sorted(w.names()) == ["a", "b"] and w.info().name == "a"
    answer(QMessageBox.StandardButton.Yes)
    w.delete_btn.click()
    assert sorted(p.name for p in store.store_root().iterdir()) == ["b"] and (keep / "weights.pt").is_file()
    assert w.names() == ["b"] and w.info().name == "b"


def test_list_follows_the_store_and_keeps_the_selection(make_napari_viewer, qtbot):
    _save("a", created="2026-12-01T09:00:00+00:00")
    w = dock(make_napari_viewer(), "Models")
    _save("newer")  # saved elsewhere (Train dock, command line): newest, listed first
    qtbot.waitUntil(lambda: w.list.count() == 2, timeout=10_000)
    assert w.names() == ["newer", "a"] and w.info().name == "a"
    assert "nuclei + gt" in w.card.fact("Trained on")


def test_evaluate_opens_the_evaluate_dock_with_the_model(make_napari_viewer, monkeypatch):
    path = _save("a")
    viewer = make_napari_viewer()
    w = dock(viewer, "Models")
    calls = []

    class FakeEvaluate:
        def add_model_candidate(self, name_or_path: str) -> None:
            calls.append(name_or_path)

    def add_dock(plugin, name, *a, **k):
        calls.append((plugin, name))
        return object(), FakeEvaluate()

    monkeypatch.setattr(viewer.window, "add_plugin_dock_widget", add_dock)
    assert w.evaluate_btn.isEnabled()
    w.evaluate_btn.click()
    assert calls == [("napari-dlbio", "Evaluate"), str(path)]
    assert "added to the Evaluate dock" in w.status.text()


def test_evaluate_ticks_the_model_in_the_real_evaluate_dock(make_napari_viewer, records):
    _save("a")
    _save("b")
    viewer = make_napari_viewer()
    w = dock(viewer, "Models")
    w.evaluate_btn.click()
    ev = dock(viewer, "Evaluate")
    ticked = ev.candidates_box.ticked_keys()
    assert ticked == [str(w.info().path)] and "added to the Evaluate dock" in w.status.text()
    assert not records.errors and sorted(i.name for i in store.list_models()) == ["a", "b"]


def test_open_folder(make_napari_viewer, monkeypatch):
    from qtpy.QtGui import QDesktopServices

    path = _save("a")
    w = dock(make_napari_viewer(), "Models")
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile())))
    w.open_btn.click()
    assert opened == [str(path)]


def test_empty_store(make_napari_viewer):
    w = dock(make_napari_viewer(), "Models")
    assert w.info() is None and w.list.count() == 0
    assert "No saved models yet" in w.card.title.text() and str(store.store_root()) in w.card.title.text()
    assert not any(b.isEnabled() for b in (w.rename_btn, w.duplicate_btn, w.delete_btn, w.evaluate_btn))
