"""Cellpose settings (pydantic): defaults are Cellpose's own (``train_seg``, ``CellposeModel.eval``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from ...config import Normalization, PredictSettings, TrainSettings

ADV = {"advanced": True}
MAX_CHANNELS = 3  # Cellpose-SAM reads at most three channels


def _cellpose_normalization() -> Normalization:
    return Normalization(low=1.0, high=99.0)


class Settings(TrainSettings):
    """Fine-tuning a Cellpose-SAM model (defaults are Cellpose's own ``train_seg`` ones)."""

    start_model: str = Field(
        "cpsam", description="Model to start from: a Cellpose name (cpsam) or a Cellpose model file")
    epochs: int = Field(
        100, ge=1, le=100_000, description="Passes over the training images (Cellpose's n_epochs)")
    learning_rate: float = Field(
        1e-5, gt=0, lt=1,
        description="Peak learning rate (1e-5 suits the ViT-L of cpsam; small nets need more)")
    weight_decay: float = Field(0.1, ge=0, lt=10, description="AdamW weight decay")
    batch_size: int = Field(1, ge=1, le=1024, description="Images (random 256-px crops) per training step")
    steps_per_epoch: int | None = Field(  # type: ignore[assignment]
        None, ge=1, le=100_000, json_schema_extra=ADV,
        description="Batches per epoch (empty = one pass over the training images)")
    val_patches: int = Field(8, ge=1, le=1000, json_schema_extra=ADV,
                             description="Validation crops scored after each epoch (a ViT-L crop is costly)")
    augment: bool = Field(True, description="Random zoom of the crops (Cellpose always rotates and flips them)")
    min_train_masks: int = Field(
        5, ge=0, description="Leave out training images with fewer objects than this")
    scale_range: float = Field(
        0.5, ge=0, le=2, json_schema_extra=ADV,
        description="Random zoom of Cellpose's augmentation: 1 +/- scale_range/2")
    normalization: Normalization = Field(
        default_factory=_cellpose_normalization,
        description="Intensity normalisation (Cellpose: percentiles 1-99)")


class Predict(PredictSettings):
    """Cellpose-SAM segmentation (defaults are ``CellposeModel.eval``'s)."""

    diameter: float | None = Field(
        None, gt=0,
        description="Typical object diameter in pixels; optional for Cellpose-SAM (scales objects to 30 px)")
    flow_threshold: float = Field(
        0.4, ge=0, description="Maximum flow error of a kept object (higher keeps more; 0 = no check)")
    cellprob_threshold: float = Field(
        0.0, ge=-12, le=12, description="Cell probability threshold: lower finds more and larger objects")
    min_size: int = Field(15, ge=0, description="Drop objects smaller than this (pixels, voxels in 3D)")
    normalization: Normalization = Field(
        default_factory=_cellpose_normalization,
        description="Intensity normalisation (Cellpose: percentiles 1-99)")
    batch_size: int = Field(8, ge=1, le=1024, description="256-px tiles per network call")
    do_3D: bool = Field(False, description="Z stacks: 3D segmentation (flows from YX, ZY and ZX planes)")
    stitch_threshold: float = Field(
        0.0, ge=0, lt=1,
        description="Z stacks in 2D: join objects of neighbouring slices that overlap by this IoU (0 = off)")
    niter: int | None = Field(
        None, ge=1, le=100_000, json_schema_extra=ADV,
        description="Iterations of the flow dynamics (empty = 200, scaled with the diameter)")
    anisotropy: float | None = Field(
        None, gt=0, description="3D: Z spacing divided by XY spacing", json_schema_extra=ADV)
    flow3D_smooth: float = Field(
        0.0, ge=0, description="3D: Gaussian smoothing (sigma) of the flows", json_schema_extra=ADV)
    max_size_fraction: float = Field(
        0.4, gt=0, le=1, json_schema_extra=ADV,
        description="Drop objects larger than this fraction of the image")
    augment: bool = Field(
        False, description="Average over flipped, overlapping tiles (slower)", json_schema_extra=ADV)
    # At least 0.05: Cellpose's make_tiles raises smaller overlaps to 0.05 but run_net counts tiles
    # with the value given, so below it some image sizes fail inside Cellpose (a reshape error).
    tile_overlap: float = Field(  # type: ignore[assignment]
        0.1, ge=0.05, lt=0.5, json_schema_extra=ADV,
        description="Overlap of Cellpose's 256-px tiles, as a fraction of a tile (0.05 or more)")
    tile_size: int | None = Field(
        None, description="Cellpose-SAM always works on 256-px tiles (empty or 256)", json_schema_extra=ADV)
    bfloat16: bool = Field(
        True, json_schema_extra=ADV,
        description="Run the network in bfloat16 (Cellpose's default: faster, less memory)")
    return_flows: bool = Field(False, description="Also return the flows and the cell probability as images")

    @model_validator(mode="after")
    def _consistent(self) -> Predict:
        if self.do_3D and self.stitch_threshold > 0:
            raise ValueError("choose do_3D or stitch_threshold > 0 for Z stacks, not both")
        if self.tile_size not in (None, 256):
            raise ValueError(f"Cellpose-SAM works on 256-px tiles; tile_size {self.tile_size} cannot be used")
        return self
