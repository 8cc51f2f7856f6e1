"""Settings forms are generated for every installed backend and round-trip their defaults."""

import pytest

from napari_dlbio import backends
from napari_dlbio._qt.forms import SettingsForm
from napari_dlbio.backends import available as usable_backends


@pytest.mark.parametrize("name", usable_backends())
def test_forms_round_trip_defaults(qtbot, name):
    be = backends.get(name)
    for cls in (be.Settings, be.Predict):
        form = SettingsForm(cls)
        qtbot.addWidget(form)
        assert form.build() == cls()


def test_form_values_errors_and_advanced(qtbot):
    be = backends.get("unet")
    form = SettingsForm(be.Settings, values={"epochs": 7, "normalization": {"low": 2.0}})
    qtbot.addWidget(form)
    s = form.build()
    assert s.epochs == 7 and s.normalization.low == 2.0
    # Nested and expert fields live in the collapsible section, basic ones do not.
    assert form.advanced is not None
    assert form.widget("normalization.low").parent() is not form.widget("epochs").parent()
    form.widget("minutes").setText("2.5")
    assert form.build().minutes == 2.5
    form.widget("minutes").setText("")
    assert form.build().minutes is None
    form.widget("learning_rate").setText("fast")
    with pytest.raises(ValueError, match="learning_rate"):
        form.build()


def test_metrics_text():
    from napari_dlbio.formatting import metrics_html as format_metrics

    text = format_metrics({"iou_per_class": [0.98, None, 0.5], "mean_iou": 0.74,
                           "training": {"epochs": 3, "best_epoch": 2, "best_loss": 0.1, "stopped": "cancelled",
                                        "seconds": 75}})
    assert "mean IoU 0.740" in text and "1: –" in text and "2: 0.50" in text
    assert "3 epochs in 1:15 min, cancelled" in text and "kept epoch 2 (lowest validation loss" in text
    assert "no validation data" in format_metrics({})
