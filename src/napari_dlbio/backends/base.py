"""The backend protocol: a static :class:`BackendSpec` and a :class:`ModelBase` per backend.

A backend declares itself once, in a :class:`BackendSpec` (its name, title, output
kind, settings classes, required packages, capabilities). The spec is cheap to
import (pydantic settings only), so the registry, the docks and the CLI read it
without loading torch. The model class it names is imported only when a model is
made, loaded or opened.

:class:`ModelBase` gives every optional hook a default, so the shared code
(:mod:`napari_dlbio.tasks`, :mod:`napari_dlbio.evaluation`, the docks) calls them
without probing: a backend overrides only what differs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    from ..bioimageio_parts import BioimageioParts
    from ..config import PredictSettings, Settings, TrainSettings
    from ..data import Sample
    from ..jobs import JobContext
    from ..store import ModelInfo
    from ..training import FitResult

OutputKind = Literal["labels", "image"]


@dataclass(frozen=True)
class BlockNeeds:
    """What a model needs from the blocks of an item too large to predict whole.

    ``halo``: context on each side of a block's core, per spatial dim (an int: the
    same for all): at least the network's receptive field (so the core's outputs
    equal whole-image ones) and, for labels, the size of an object (so an object
    crossing a block face is whole in the halo and can be matched across it).
    ``multiple``: block origins (and halos) on multiples of this (the network's total
    down-sampling, StarDist's grid), so every block sees the pixel grid the whole
    image would.
    """

    halo: int | tuple[int, ...] = 64
    multiple: int | tuple[int, ...] = 1


@dataclass(frozen=True)
class BackendSpec:
    """Everything known about a backend without importing it."""

    name: str                       # "unet", "cellpose", ...: the key in model.json
    title: str                      # shown in the GUI
    output: OutputKind              # labels (segmentation) or image (restoration)
    Settings: type                  # training / new-model settings (a config.TrainSettings)
    Predict: type                   # prediction settings (a config.PredictSettings)
    model: str | type               # "module:Class" of its ModelBase subclass, or the class
    requires: tuple[str, ...] = ("torch",)   # import names that must be installed
    extra: str = ""                 # pip extra that installs them: napari-dlbio[extra]
    has_pretrained: bool = False    # opens models that are not ours (names or files)
    pretrained_hint: str = ""       # example of such a name, shown in the Predict dock
    needs_labels: bool = True       # False: self-supervised (trains on images alone)
    layer_suffix: str | None = None  # outputs named "<image>_<suffix>" (None: "<image>_<model>")
    bioimageio: bool = False        # its models export to bioimage.io zips (ModelBase.bioimageio)

    def model_class(self) -> type[ModelBase]:
        if isinstance(self.model, type):
            return self.model
        module, _, attr = self.model.partition(":")
        return getattr(importlib.import_module(module), attr)

    def install_hint(self) -> str:
        return f"pip install 'napari-dlbio[{self.extra}]'" if self.extra else "pip install napari-dlbio"


class Backend:
    """A backend ready to use: its spec plus its (imported) model class."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.Model = spec.model_class()

    name = property(lambda self: self.spec.name)
    title = property(lambda self: self.spec.title)
    output = property(lambda self: self.spec.output)
    Settings = property(lambda self: self.spec.Settings)
    Predict = property(lambda self: self.spec.Predict)
    requires = property(lambda self: self.spec.requires)
    layer_suffix = property(lambda self: self.spec.layer_suffix)

    def new(self, settings: TrainSettings | None, n_channels: int, ndim: int) -> ModelBase:
        return self.Model.new(self.Model.coerce_settings(settings), int(n_channels), int(ndim))

    def load(self, info: ModelInfo) -> ModelBase:
        model = self.Model.load(info)
        model.info = info
        return model

    def pretrained(self, name_or_path: str) -> ModelBase:
        return self.Model.pretrained(str(name_or_path))


class ModelBase:
    """A loaded or new model of one backend; subclasses set ``spec`` and override hooks.

    Required: :meth:`new`, :meth:`load`, :meth:`predict` (or :meth:`forward`),
    :meth:`train`, :meth:`save_weights`. Everything else has a default.
    """

    spec: ClassVar[BackendSpec]

    settings: Settings          # architecture + training settings, saved in model.json
    ndim: int                   # spatial dims of one item (2 or 3)
    n_channels: int             # input channels of one item
    info: ModelInfo | None = None   # set when loaded from / saved to the store
    name: str = ""              # shown when the model is not from the store

    # -- identity -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.spec.name

    @property
    def output(self) -> OutputKind:
        return self.spec.output

    @property
    def layer_suffix(self) -> str | None:
        """Outputs are named ``<image>_<suffix>`` (None: ``<image>_<model name>``); default: the spec's."""
        return self.spec.layer_suffix

    @property
    def display_name(self) -> str:
        return self.info.name if self.info is not None else (self.name or self.spec.name)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def coerce_settings(cls, settings: Any) -> Any:
        """The backend's Settings from ``settings`` (None: defaults; generic: shared fields)."""
        Settings = cls.spec.Settings
        if settings is None:
            return Settings()
        if isinstance(settings, Settings):
            return settings
        data = settings if isinstance(settings, dict) else settings.model_dump()
        return Settings.model_validate({k: v for k, v in data.items() if k in Settings.model_fields})

    @classmethod
    def new(cls, settings: TrainSettings, n_channels: int, ndim: int) -> ModelBase:
        raise NotImplementedError

    @classmethod
    def load(cls, info: ModelInfo) -> ModelBase:
        raise NotImplementedError

    @classmethod
    def pretrained(cls, name_or_path: str) -> ModelBase:
        from ..store import ModelError

        short = cls.spec.title.split(" (")[0]
        raise ModelError(
            f"no pretrained {short} named {name_or_path!r}: the {cls.spec.title} backend has no pretrained "
            f"models. Train one (napari-dlbio train --backend {cls.spec.name} ...) or give the folder of a "
            "saved model")

    @classmethod
    def settings_from(cls, info: ModelInfo) -> Any:
        """The saved settings of ``info``, validated; a clear error for other versions."""
        from ..store import ModelError

        saved = int(info.settings.get("version", 1) or 1)
        current = int(cls.spec.Settings.model_fields["version"].default)
        if saved > current:
            raise ModelError(
                f"{info.path}: saved by a newer napari-dlbio (settings version {saved}, this one reads "
                f"up to {current}); update napari-dlbio to use this model")
        try:
            return cls.spec.Settings.model_validate(info.settings)
        except ValueError as exc:
            raise ModelError(f"{info.path}: the {cls.spec.title} settings in model.json are invalid: "
                             f"{exc}") from exc

    def merge_settings(self, new: TrainSettings) -> Any:
        """New training fields, the architecture (``Settings.architecture``) of this model.

        Fine-tuning keeps what defines the network or the meaning of its outputs.
        """
        new = self.coerce_settings(new)
        keep = {k: getattr(self.settings, k) for k in type(new).architecture if k in type(new).model_fields}
        return new.model_copy(update=keep) if keep else new

    # -- capabilities -------------------------------------------------------------------------
    def item_ndim(self, settings: PredictSettings) -> int:
        """Spatial dims of one item (a 2D Cellpose network segments 3D volumes)."""
        return self.ndim

    def accepts_channels(self, n: int) -> bool:
        return n == self.n_channels

    @property
    def semantic(self) -> bool:
        """One class per label value (IoU per class) rather than one label per object."""
        return False

    @property
    def n_classes(self) -> int | None:
        return None

    def normalization(self) -> dict:
        """The intensity normalisation recorded in model.json."""
        norm = self.settings.model_dump(mode="json").get("normalization")
        return norm if isinstance(norm, dict) else {}

    def normalizations(self, settings: PredictSettings) -> tuple:
        """Every percentile :class:`~napari_dlbio.config.Normalization` :meth:`predict` applies.

        Blockwise prediction computes their bounds over the whole item and hands them
        to each block (:func:`napari_dlbio.normalize.item_bounds`). Default: the one
        in the model's settings (:meth:`normalization`).
        """
        from ..config import Normalization

        norm = self.normalization()
        return (Normalization.model_validate(norm),) if norm else ()

    def block_needs(self, settings: PredictSettings) -> BlockNeeds:
        """Halo and alignment of the blocks of a large item (see :class:`BlockNeeds`)."""
        return BlockNeeds()

    # -- prediction ----------------------------------------------------------------------------
    def predict(self, item: np.ndarray, settings: PredictSettings | None, ctx: JobContext | None = None
                ) -> dict[str, Any]:
        """One item ``(C, *spatial)`` float32, raw intensities -> named outputs.

        Labels backends return ``{"labels": int32 (*spatial), ...}`` and may add float
        images and, under ``objects`` (:data:`napari_dlbio.objects.OBJECTS`), per-object
        scores in [0, 1] indexed by label id; image backends return ``{"image": float32
        (C', *spatial)}``. The default runs :meth:`forward` then :meth:`postprocess`
        (again on flipped copies for ``settings.flip_agreement``).
        """
        from ..jobs import JobContext
        from ..objects import AGREEMENT, OBJECTS, flip_agreement

        ctx = ctx or JobContext()
        settings = self.coerce_predict(settings)
        item = self.check_item(item, settings)
        raw = self.forward(item, settings, ctx)
        ctx.check()
        out = self.postprocess(raw, settings, ctx)
        if settings.flip_agreement and OBJECTS in out:
            # Shared by every instance backend: its own forward + postprocess on flipped copies.
            def again(x: np.ndarray) -> np.ndarray:
                return self.postprocess(self.forward(x, settings, ctx), settings, ctx)["labels"]

            out[AGREEMENT] = flip_agreement(again, item, out["labels"])
        return out

    def coerce_predict(self, settings: Any) -> Any:
        Predict = self.spec.Predict
        if isinstance(settings, Predict):
            return settings
        if settings is None:
            return Predict()
        # Generic settings: what the user set explicitly (other backends' defaults may not fit).
        data = settings.model_dump(include=settings.model_fields_set)
        return Predict.model_validate({k: v for k, v in data.items() if k in Predict.model_fields})

    def check_item(self, item: np.ndarray, settings: PredictSettings | None = None) -> np.ndarray:
        """``item`` as float32 (C, *spatial); a clear error for the wrong shape or bad values."""
        from ..normalize import as_item

        item = np.asarray(item)
        nd = self.item_ndim(self.coerce_predict(settings))
        if item.ndim != nd + 1:
            raise ValueError(f"this {nd}D {self.spec.title} model takes items (C, *spatial) "
                             f"with {nd + 1} axes, got shape {item.shape}")
        if not self.accepts_channels(item.shape[0]):
            raise ValueError(f"the model takes {self.n_channels} channel(s), the image has {item.shape[0]}")
        return as_item(item)

    def forward(self, item: np.ndarray, settings: PredictSettings, ctx: JobContext) -> Any:
        """The network's raw output for a checked item (cached for tuning and evaluation)."""
        raise NotImplementedError

    def postprocess(self, raw: Any, settings: PredictSettings, ctx: JobContext) -> dict[str, Any]:
        """Raw network output -> named outputs (watershed, NMS, ...); default: as it is."""
        return raw

    # -- training --------------------------------------------------------------------------------
    def train(self, train: list[Sample], val: list[Sample], settings: TrainSettings, ctx: JobContext
              ) -> FitResult:
        """Train (or fine-tune) in place; keep the best weights even when cancelled."""
        raise NotImplementedError

    def evaluate(self, samples: list[Sample], ctx: JobContext, raw: list | None = None) -> dict[str, Any]:
        """Validation metrics; the default scores predictions against the samples' targets.

        ``raw``: network outputs already computed for ``samples`` (see :meth:`forward`).
        """
        from ..evaluation import evaluate_predictions

        return evaluate_predictions(self, samples, ctx, raw)

    def release(self) -> None:
        """Give accelerator memory back at the end of a job (default: nothing held)."""

    # -- storage ----------------------------------------------------------------------------------
    def save_weights(self, folder: Path) -> None:
        """Write the backend's own files into ``folder`` (model.json is the store's)."""
        raise NotImplementedError

    # -- bioimage.io --------------------------------------------------------------------------------
    def bioimageio(self) -> BioimageioParts:
        """What a bioimage.io package of this model needs from the backend (see :mod:`..bioimageio_parts`)."""
        from ..store import ModelError

        raise ModelError(f"{self.spec.title} models cannot be exported to bioimage.io yet")

    @classmethod
    def from_bioimageio(cls, rdf: Any, zip_path: Path, folder: Path) -> ModelBase:
        """A model of this backend from the foreign bioimage.io package ``zip_path`` (unpacked in ``folder``).

        ``rdf``: the package's validated ``bioimageio.spec`` description. Our own exports
        never come here (they restore from their ``model.json``).
        """
        from ..store import ModelError

        raise ModelError(f"{cls.spec.title} cannot run the bioimage.io model {getattr(rdf, 'name', zip_path)}")
