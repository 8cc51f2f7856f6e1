"""Pydantic settings shared by every backend.

Every settings model is validated on assignment, carries a ``version`` so that a
model saved today can be read (or refused clearly) by a later release, and is
written into each model's ``model.json``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


class Settings(BaseModel):
    """Base of all settings: strict, validated on assignment, versioned."""

    # defer_build: the schema is built on first validation, not at import (opening a dock
    # imports every backend's settings; building their schemas stalled the window ~30 ms).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)
    version: int = Field(1, description="Settings schema version", ge=1)


class Normalization(Settings):
    """Percentile normalisation, as csbdeep and Cellpose do it."""

    mode: Literal["percentile", "none"] = Field(
        "percentile", description="percentile: map low/high percentiles to 0/1; none: use raw values"
    )
    low: float = Field(1.0, ge=0.0, le=100.0, description="Lower percentile -> 0")
    high: float = Field(99.8, ge=0.0, le=100.0, description="Upper percentile -> 1")
    per_channel: bool = Field(True, description="Normalise each channel on its own")

    @model_validator(mode="after")
    def _ordered(self) -> Normalization:
        if self.mode == "percentile" and self.low >= self.high:
            raise ValueError(f"low percentile ({self.low}) must be below high ({self.high})")
        return self


class TrainSettings(Settings):
    """What every trainer understands; backends extend it.

    ``architecture`` names the fields that define a network or the meaning of its
    outputs: when fine-tuning, the loaded model's values of these win over new ones.
    """

    architecture: ClassVar[tuple[str, ...]] = ()

    epochs: int = Field(100, ge=1, le=100_000, description="Upper bound on epochs")
    minutes: float | None = Field(
        None, gt=0, description="Time budget: stop when spent and keep the best model"
    )
    steps_per_epoch: int = Field(50, ge=1, le=100_000, description="Batches per epoch")
    batch_size: int = Field(8, ge=1, le=1024, description="Patches per training step")
    learning_rate: float = Field(
        1e-3, gt=0, lt=1, description="Peak learning rate (cosine schedule)",
        json_schema_extra={"advanced": True},
    )
    val_fraction: float = Field(0.15, ge=0.0, lt=0.9, description="Share of data held out")
    val_patches: int = Field(32, ge=1, le=1000, description="Validation patches scored after each epoch",
                             json_schema_extra={"advanced": True})
    augment: bool = Field(True, description="Random flips, rotations and intensity changes of the patches",
                          json_schema_extra={"advanced": True})
    seed: int = Field(0, description="Random seed (data split, patches, initial weights)",
                      json_schema_extra={"advanced": True})
    weight_decay: float = Field(1e-4, ge=0, lt=10, description="AdamW weight decay",
                                json_schema_extra={"advanced": True})
    device: DeviceName = Field("auto", description="Where to compute: auto picks a GPU if there is one")

    @property
    def scribbles(self) -> bool:
        """True when label 0 means 'not annotated' (ignored) rather than background."""
        return False

    def needs_targets(self) -> bool:
        """True when training pairs each image with a target image (CARE, Noise2Noise), not labels."""
        return False

    def target_help(self) -> str:
        """What a target image is for these settings, in one sentence for the user ('' : none)."""
        return ""


class PredictSettings(Settings):
    """What every predictor understands; backends extend it."""

    device: DeviceName = Field("auto", description="Where to compute: auto picks a GPU if there is one")
    tile_size: int | None = Field(
        None, ge=32, description="Tile edge in pixels for large images (None = automatic)"
    )
    tile_overlap: int = Field(32, ge=0, description="Overlap between tiles in pixels",
                              json_schema_extra={"advanced": True})
    batch_size: int = Field(4, ge=1, le=1024, description="Tiles per network call",
                            json_schema_extra={"advanced": True})
    flip_agreement: bool = Field(
        False, description="Instance models: also predict flipped copies; each object's score is multiplied "
        "by how well they find it again (one more prediction per axis)", json_schema_extra={"advanced": True})
