"""Helpers for the GUI tests (imported by the test modules)."""

# Tiny U-Net settings so a GUI training run takes a few seconds on 2 CPU cores.
TINY = {
    "epochs": 2,
    "steps_per_epoch": 3,
    "batch_size": 2,
    "patch_size": 32,
    "depth": 2,
    "base_width": 8,
    "val_patches": 2,
}


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-dlbio", name)
    return widget


def set_form(form, values):
    form.set_values(values)
    assert {k: form.values()[k] for k in values} == {k: v for k, v in values.items()}


def finished(runner):
    return lambda: not runner.running


def tiny_model(qtbot, viewer, img, lab, name="tiny"):
    """Train a tiny U-Net through the Train dock and return the dock."""
    viewer.add_image(img, name="nuclei2d")
    viewer.add_labels(lab, name="gt")
    w = dock(viewer, "Train")
    w.image.set_layer("nuclei2d")
    w.labels.set_layer("gt")
    set_form(w.form, TINY)
    w.name.setText(name)
    w.train()
    qtbot.waitUntil(finished(w.runner), timeout=90_000)
    assert w.outcome is not None, w.status.text()
    return w

