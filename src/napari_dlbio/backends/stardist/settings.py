"""StarDist settings (pydantic): the GUI form and the CLI options are generated from them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ...config import Normalization, PredictSettings, TrainSettings

ADV = {"advanced": True}


class Settings(TrainSettings):
    """StarDist network and training; defaults follow the official package's configs."""

    # Fine-tuning keeps the loaded network's values of these.
    architecture: ClassVar[tuple[str, ...]] = (
        "n_rays", "grid", "grid_z", "depth", "width", "n_conv_per_depth", "kernel_size", "features")

    n_rays: int | None = Field(None, ge=3, le=1024, description="Rays per object (empty: 32 in 2D, 96 in 3D)")
    grid: int = Field(2, ge=1, le=16, description="Output subsampling in Y and X (1, 2, 4, ...)")
    grid_z: int | None = Field(None, ge=1, le=16, description="Subsampling in Z for 3D (empty: as grid)",
                               json_schema_extra=ADV)
    depth: int | None = Field(None, ge=1, le=6, description="U-Net levels (empty: 3 in 2D, 2 in 3D)")
    width: int = Field(32, ge=4, le=256, description="Filters of the first U-Net level (doubling per level)")
    n_conv_per_depth: int = Field(2, ge=1, le=4, description="Convolutions per U-Net level",
                                  json_schema_extra=ADV)
    kernel_size: Literal[3, 5] = Field(3, description="Convolution kernel size", json_schema_extra=ADV)
    features: int = Field(128, ge=0, le=1024, description="Filters of the convolution after the U-Net",
                          json_schema_extra=ADV)
    patch_size: int | None = Field(None, ge=16, le=2048,
                                   description="Training patch edge in Y/X (empty: 128 in 2D, 64 in 3D)")
    patch_size_z: int | None = Field(None, ge=4, le=1024, description="Training patch depth in Z (empty: 32)",
                                     json_schema_extra=ADV)
    prob_weight: float = Field(1.0, ge=0, description="Weight of the probability loss", json_schema_extra=ADV)
    dist_weight: float = Field(0.2, ge=0, description="Weight of the distance loss", json_schema_extra=ADV)
    background_reg: float = Field(1e-4, ge=0, description="Penalty on distances predicted for background",
                                  json_schema_extra=ADV)
    foreground: float = Field(0.9, ge=0, le=1, description="Share of patches centred on an object",
                              json_schema_extra=ADV)
    augment: bool = Field(True, description="Random flips, rotations and intensity changes")
    optimize_thresholds: bool = Field(
        True, description="Tune probability/NMS thresholds on the validation data")
    normalization: Normalization = Field(default_factory=Normalization, description="Input normalisation")
    # Tuned for a few CPU minutes: the official package trains longer (lr 3e-4, patch 256).
    learning_rate: float = Field(
        2e-3, gt=0, lt=1,
        description="Peak learning rate (cosine schedule); lower it (e.g. 3e-4) to fine-tune")
    batch_size: int = Field(4, ge=1, le=1024, description="Patches per training step")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay", json_schema_extra=ADV)


    @field_validator("grid", "grid_z")
    @classmethod
    def _power_of_two(cls, v: int | None) -> int | None:
        if v is not None and v & (v - 1):
            raise ValueError(f"must be a power of two (1, 2, 4, 8, 16), not {v}")
        return v


class Predict(PredictSettings):
    """StarDist prediction; empty thresholds use the model's optimised ones."""

    prob_thresh: float | None = Field(
        None, gt=0, lt=1, description="Object probability threshold (empty: model's)")
    nms_thresh: float | None = Field(
        None, gt=0, lt=1, description="Overlap allowed between objects (empty: model's)")
    polygons: bool = Field(False, description="Also return the 2D objects' polygons as shapes")
