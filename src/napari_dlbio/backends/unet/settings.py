"""U-Net settings: what the GUI form and the CLI options are generated from."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ...config import Normalization, PredictSettings, TrainSettings

ADV = {"advanced": True}


class Settings(TrainSettings):
    """U-Net architecture and training.

    The defaults are chosen for a 5-minute CPU budget on nuclei (DSB2018): a narrow
    net trains many more steps in the time, which matters more than width there.
    """

    # What defines the network or the meaning of its outputs (the thresholds are tuned
    # on validation data after training, and kept unless tuned again).
    architecture: ClassVar[tuple[str, ...]] = (
        "mode", "labels_zero", "depth", "base_width", "batch_norm", "dropout",
        "normalization", "boundary_width", "n_classes", "foreground_threshold", "seed_threshold",
    )

    mode: Literal["instance", "semantic"] = Field(
        "instance",
        description="instance: one label per object (nuclei, cells); semantic: one class per label value")
    labels_zero: Literal["background", "unannotated"] = Field(
        "background",
        description="Semantic labels: 0 = background (dense) or 0 = not annotated (scribbles, ignored)")
    depth: int = Field(3, ge=1, le=6, description="Number of down-sampling levels")
    base_width: int = Field(
        16, ge=4, le=256, description="Feature channels of the first level (doubled at each level)")
    batch_norm: bool = Field(True, description="Batch normalisation after each convolution")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout rate in the deepest block", json_schema_extra=ADV)
    patch_size: int = Field(
        128, ge=16, le=2048, description="Training patch edge (Y, X) in pixels; a multiple of 2**depth")
    patch_size_z: int = Field(
        32, ge=4, le=512, description="Training patch depth (Z) of 3D models", json_schema_extra=ADV)
    normalization: Normalization = Field(
        default_factory=Normalization, description="Intensity normalisation", json_schema_extra=ADV)
    boundary_width: int = Field(
        1, ge=0, le=10, description="Instance mode: width of the boundary class in pixels",
        json_schema_extra=ADV)
    boundary_weight: float = Field(
        2.0, gt=0, le=100, description="Instance mode: loss weight of the boundary class",
        json_schema_extra=ADV)
    dice_weight: float = Field(
        0.5, ge=0, le=10, description="Weight of the soft Dice term added to cross-entropy",
        json_schema_extra=ADV)
    foreground_patches: float = Field(
        0.7, ge=0, le=1, description="Share of training patches centred on an object", json_schema_extra=ADV)
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="AdamW weight decay", json_schema_extra=ADV)
    val_patches: int = Field(
        24, ge=1, le=1000, description="Validation patches scored after each epoch (at most)",
        json_schema_extra=ADV)
    tune_thresholds: bool = Field(
        True, description="Instance mode: after training, pick the watershed thresholds that score "
        "best on the validation images", json_schema_extra=ADV)
    foreground_threshold: float = Field(
        0.5, gt=0, lt=1, description="Instance mode: the model's foreground threshold (set by tuning)",
        json_schema_extra=ADV)
    seed_threshold: float = Field(
        0.5, gt=0, lt=1, description="Instance mode: the model's seed threshold (set by tuning)",
        json_schema_extra=ADV)
    mixed_precision: bool = Field(
        True, description="Compute in bfloat16 where the hardware runs it fast (GPUs; 2D on recent CPUs)",
        json_schema_extra=ADV)
    n_classes: int | None = Field(
        None, ge=2, le=255,
        description="Semantic mode: number of label values including 0 (None = from the training labels)",
        json_schema_extra=ADV)
    learning_rate: float = Field(3e-3, gt=0, lt=1, description="Peak learning rate (cosine schedule)")
    batch_size: int = Field(8, ge=1, le=1024, description="Patches per training step")
    steps_per_epoch: int = Field(50, ge=1, le=100_000, description="Batches per epoch")
    epochs: int = Field(200, ge=1, le=100_000, description="Upper bound on epochs")

    @property
    def scribbles(self) -> bool:
        """True when label 0 means 'not annotated' (semantic mode with scribbles)."""
        return self.mode == "semantic" and self.labels_zero == "unannotated"

    @model_validator(mode="after")
    def _patch_fits_depth(self) -> Settings:
        m = 2**self.depth
        if self.patch_size % m:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of 2**depth = {m}")
        return self


class Predict(PredictSettings):
    """U-Net prediction and post-processing."""

    foreground_threshold: float | None = Field(
        None, gt=0, lt=1,
        description="Instance mode: object probability above this is foreground (None = the model's)")
    seed_threshold: float | None = Field(
        None, gt=0, lt=1,
        description="Instance mode: interior probability above this starts an object (None = the model's)")
    min_size: int = Field(
        20, ge=0, description="Instance mode: drop objects smaller than this (pixels/voxels)")
    min_seed_size: int = Field(
        3, ge=1, description="Instance mode: ignore seeds smaller than this", json_schema_extra=ADV)
    probabilities: bool = Field(False, description="Also return the class probabilities")
    test_time_flips: bool = Field(
        False, description="Average the network over flipped copies (3x slower in 2D, a little better)",
        json_schema_extra=ADV)


def n_outputs(s: Settings) -> int | None:
    """Network output channels; None while a semantic model's classes are unknown."""
    if s.mode == "instance":
        return 3
    if s.n_classes is None:
        return None
    return s.n_classes - 1 if s.scribbles else s.n_classes
