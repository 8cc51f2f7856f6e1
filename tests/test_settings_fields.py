from typing import Literal

import pytest
from pydantic import Field

from napari_dlbio import settings_fields as sf
from napari_dlbio.config import Normalization, PredictSettings, TrainSettings


class Demo(TrainSettings):
    mode: Literal["instance", "semantic"] = Field("instance", description="what to predict")
    patch: tuple[int, int] = Field((128, 96), description="patch shape")
    depth: int = Field(3, ge=1, le=5, description="levels", json_schema_extra={"advanced": True})
    threshold: float | None = Field(None, gt=0, lt=1, description="optional threshold")
    normalization: Normalization = Field(default_factory=Normalization, description="intensities")


def _by_name(specs):
    return {s.name: s for s in specs}


def test_field_specs():
    specs = _by_name(sf.fields(Demo))
    assert "version" not in specs
    m = specs["mode"]
    assert (m.type, m.default, m.choices, m.option, m.description) == (
        str,
        "instance",
        ("instance", "semantic"),
        "--mode",
        "what to predict",
    )
    d = specs["depth"]
    assert (d.type, d.ge, d.le, d.minimum, d.maximum, d.advanced) == (int, 1, 5, 1, 5, True)
    t = specs["threshold"]
    assert t.optional and t.default is None and (t.gt, t.lt) == (0, 1)
    p = specs["patch"]
    assert p.sequence == 2 and p.default == [128, 96] and p.parse("64x32") == [64, 32]
    low = specs["normalization.low"]
    assert (
        low.group == "normalization"
        and low.option == "--normalization-low"
        and low.dest == "normalization__low"
    )
    assert specs["device"].choices == ("auto", "cpu", "cuda", "mps")
    assert specs["minutes"].optional and specs["minutes"].parse("none") is None
    basic = _by_name(sf.fields(Demo, advanced=False))
    assert "depth" not in basic and "mode" in basic


def test_every_core_field_is_described():
    for model in (TrainSettings, PredictSettings, Normalization):
        for spec in sf.fields(model):
            assert spec.description, f"{model.__name__}.{spec.name} has no description"


def test_build_and_back():
    # dotted names and argparse dests ("normalization__low") both work
    s = sf.build(Demo, {"mode": "semantic", "normalization__low": 2.0, "patch": [64, 64]})
    assert s.mode == "semantic" and s.normalization.low == 2.0 and s.patch == (64, 64)
    flat = sf.flat_values(s)
    assert flat["normalization.low"] == 2.0 and sf.build(Demo, flat) == s
    # a base keeps what is not given (fine-tuning a loaded model's settings)
    t = sf.build(Demo, {"epochs": 3}, base=s)
    assert t.epochs == 3 and t.mode == "semantic"


def test_build_errors_are_one_line():
    with pytest.raises(ValueError) as e:
        sf.build(Demo, {"depth": 9, "normalization.low": 99.9})
    msg = str(e.value)
    assert "\n" not in msg
    assert "depth: Input should be less than or equal to 5" in msg
    assert "low percentile (99.9) must be below high" in msg


def test_parse():
    specs = _by_name(sf.fields(Demo))
    with pytest.raises(ValueError, match="not one of instance, semantic"):
        specs["mode"].parse("other")
    with pytest.raises(ValueError, match="expected int"):
        specs["epochs"].parse("ten")
    assert specs["normalization.per_channel"].parse("no") is False
