"""Training and prediction settings of the restoration backend: Noise2Void, N2V2, CARE, Noise2Noise.

Pydantic; the GUI and CLI are generated from them. One settings class for the four
algorithms: they share the U-Net, the patches, the schedule and the files; the
masking fields matter to N2V/N2V2 only and say so (the form shows every field, and
a field shown conditionally would hide what a saved model used).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ...config import Normalization, PredictSettings, TrainSettings

_ADV = {"advanced": True}


def _power_of_two(v: int) -> int:
    if v & (v - 1):
        raise ValueError(f"patch size must be a power of two (16, 32, 64, 128, ...), got {v}")
    return v


#: What a target image is, per algorithm that needs one (shown by the Train dock and the CLI).
TARGET_HELP = {
    "care": "CARE learns to turn each input into its target: the clean, high-SNR image of the same field "
    "(longer exposure, more light or averaged frames), of the same shape",
    "n2n": "Noise2Noise learns from pairs of noisy images: the target is a second, independent noisy "
    "acquisition of the same field, of the same shape (no clean image is needed)",
}
SUPERVISED = tuple(TARGET_HELP)


class Settings(TrainSettings):
    """Restoration training settings. The defaults suit a CPU and a few minutes."""

    # Fixed once a model exists: fine-tuning keeps the loaded model's values.
    architecture: ClassVar[tuple[str, ...]] = (
        "algorithm", "depth", "base_filters", "independent_channels", "normalize", "normalization")

    # Version 2 added care/n2n; version-1 models (n2v2/n2v) validate unchanged.
    version: int = Field(2, description="Settings schema version", ge=1)
    algorithm: Literal["n2v2", "n2v", "care", "n2n"] = Field(
        "n2v2", description="n2v2 (blur-pool U-Net, median masking: no checkerboard artefacts) or the original "
        "n2v learn from the noisy images alone; care (input -> clean target) and n2n (Noise2Noise: input -> "
        "second noisy acquisition) learn from pairs of images"
    )
    patch_size: int = Field(
        64, ge=16, le=512, description="Edge of the square training patches in pixels (power of two)"
    )
    patch_size_z: int = Field(
        16, ge=4, le=256, description="Patch depth in Z for 3D models (power of two)", json_schema_extra=_ADV
    )
    augment: bool = Field(True, description="Random flips and 90° rotations of the training patches")
    independent_channels: bool = Field(
        True, description="Denoise every channel on its own (off: channels help each other)"
    )
    struct_mask: Literal["none", "horizontal", "vertical", "cross", "square"] = Field(
        "none",
        description="N2V only. structN2V: also mask neighbours along this direction, for noise correlated "
        "along rows/columns (stripes); rotations are then turned off",
        json_schema_extra=_ADV,
    )
    struct_span: int = Field(5, ge=3, le=15, description="N2V only: structN2V mask length (odd)",
                             json_schema_extra=_ADV)
    # Small and deep: on a CPU, many cheap steps beat few expensive ones (see bench_n2v.py).
    depth: int = Field(3, ge=1, le=5, description="U-Net levels", json_schema_extra=_ADV)
    base_filters: int = Field(8, ge=8, le=256, description="U-Net filters of the first level", json_schema_extra=_ADV)
    masked_percent: float = Field(
        2.0, ge=0.05, le=10.0, description="N2V only: share of pixels masked per patch, in percent",
        json_schema_extra=_ADV,
    )
    roi_size: int = Field(
        11, ge=3, le=21, description="N2V only: neighbourhood a masked pixel's replacement is drawn from (odd)",
        json_schema_extra=_ADV,
    )
    normalization: Normalization = Field(
        default_factory=Normalization,
        description="Per-image percentile normalisation before CAREamics' own (dim and bright images "
        "then look alike to the network); undone on the output",
        json_schema_extra=_ADV,
    )
    normalize: Literal["mean_std", "min_max", "none"] = Field(
        "mean_std", description="Intensity normalisation (statistics of the training data)", json_schema_extra=_ADV
    )
    average_last: float = Field(
        0.25, ge=0.0, lt=1.0,
        description="Average the weights and batch-norm statistics over this final share of training "
        "(smooths out the noise of single N2V steps; 0 = keep the last weights)",
        json_schema_extra=_ADV,
    )
    val_batches: int = Field(
        4, ge=1, le=1000, description="Validation batches per epoch (validation costs training time)",
        json_schema_extra=_ADV,
    )
    # Overrides of the generic training defaults, chosen for N2V on a CPU.
    epochs: int = Field(200, ge=1, le=100_000, description="Upper bound on epochs")
    steps_per_epoch: int = Field(25, ge=1, le=100_000, description="Batches per epoch")
    batch_size: int = Field(8, ge=1, le=1024, description="Patches per batch")
    learning_rate: float = Field(2e-3, gt=0, lt=1, description="Peak learning rate (cosine schedule)",
                                 json_schema_extra=_ADV)
    weight_decay: float = Field(0.0, ge=0, lt=10, description="Adam weight decay (CAREamics' default: 0)",
                                json_schema_extra=_ADV)
    val_fraction: float = Field(0.1, ge=0.0, lt=0.9, description="Share of the images held out for validation")

    def needs_targets(self) -> bool:
        return self.algorithm in SUPERVISED

    def target_help(self) -> str:
        return TARGET_HELP.get(self.algorithm, "")

    @property
    def family(self) -> str:
        """The algorithm's family, which names the outputs: n2v (N2V and N2V2), care or n2n."""
        return "n2v" if self.algorithm in ("n2v", "n2v2") else self.algorithm

    @field_validator("patch_size", "patch_size_z")
    @classmethod
    def _pow2(cls, v: int) -> int:
        return _power_of_two(v)

    @field_validator("struct_span", "roi_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v


class Predict(PredictSettings):
    """Prediction settings of Noise2Void."""

    tta: bool = Field(
        True, description="Average over the 8 flips/rotations (8x slower, clearly less residual noise)"
    )
