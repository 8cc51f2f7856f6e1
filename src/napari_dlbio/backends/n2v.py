"""Noise2Void denoising through CAREamics.

CAREamics does the self-supervised part: its configuration factory
(``create_advanced_n2v_config``), its data pipeline (patches, augmentation,
mean/std statistics), its N2V/N2V2 pixel masking and loss, its U-Net, its
Lightning training, its checkpoints and its bioimage.io exporter/loader. This
module adds what a napari user needs around it:

- progress after every batch and epoch, cancel within a batch, a time budget and
  the same cosine learning-rate schedule as :func:`napari_dlbio.training.fit`,
  through one Lightning callback;
- all of CAREamics' files (checkpoints, CSV logs) in a temporary work folder,
  never in the current directory; the model's own folder gets the CAREamics
  configuration and a CAREamics checkpoint;
- prediction through the shared tiler (:func:`napari_dlbio.tiling.predict_tiled`:
  progress per tile, cancel, out-of-memory retry) with test-time averaging over
  the 8 flips/rotations of the YX plane, which removes much of the residual noise
  a short CPU training leaves behind. Output is in the input's intensity units;
- per-image percentile normalisation before CAREamics' dataset-wide mean/std, so
  dim and bright images look alike to the network (undone on the output);
- weights and batch-norm statistics averaged over the last quarter of training
  (N2V's loss on a few masked pixels is noisy from step to step).

CAREamics, torch and Lightning are imported only inside functions, so reading
:class:`N2VSettings` (GUI forms, CLI options) stays cheap.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from ..config import Normalization, PredictSettings, TrainSettings
from ..jobs import Deadline, JobContext
from ..normalize import check_image
from ..store import ModelError, ModelInfo

CONFIG_FILE = "careamics.yaml"
CHECKPOINT_FILE = "n2v.ckpt"
# Architecture fields: fixed once a model exists (fine-tuning keeps the loaded model's).
ARCH_FIELDS = ("algorithm", "depth", "base_filters", "independent_channels", "normalize", "normalization")
_ADV = {"advanced": True}


def _power_of_two(v: int) -> int:
    if v & (v - 1):
        raise ValueError(f"patch size must be a power of two (16, 32, 64, 128, ...), got {v}")
    return v


class N2VSettings(TrainSettings):
    """Noise2Void / N2V2 training settings. The defaults suit a CPU and a few minutes."""

    algorithm: Literal["n2v2", "n2v"] = Field(
        "n2v2", description="N2V2 (blur-pool U-Net, median masking: no checkerboard artefacts) or the original N2V"
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
        description="structN2V: also mask neighbours along this direction, for noise correlated "
        "along rows/columns (stripes); rotations are then turned off",
        json_schema_extra=_ADV,
    )
    struct_span: int = Field(5, ge=3, le=15, description="structN2V mask length (odd)", json_schema_extra=_ADV)
    # Small and deep: on a CPU, many cheap steps beat few expensive ones (see bench_n2v.py).
    depth: int = Field(3, ge=1, le=5, description="U-Net levels", json_schema_extra=_ADV)
    base_filters: int = Field(8, ge=8, le=256, description="U-Net filters of the first level", json_schema_extra=_ADV)
    masked_percent: float = Field(
        2.0, ge=0.05, le=10.0, description="Share of pixels masked per patch, in percent", json_schema_extra=_ADV
    )
    roi_size: int = Field(
        11, ge=3, le=21, description="Neighbourhood a masked pixel's replacement is drawn from (odd)",
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
    val_fraction: float = Field(0.1, ge=0.0, lt=0.9, description="Share of the images held out for validation")

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


class N2VPredict(PredictSettings):
    """Prediction settings of Noise2Void."""

    tta: bool = Field(
        True, description="Average over the 8 flips/rotations (8x slower, clearly less residual noise)"
    )


# ---------------------------------------------------------------------------------------
# CAREamics configuration


def _careamics_axes(n_channels: int, ndim: int) -> str:
    # One-channel data goes in as plain YX/ZYX: the configuration then looks like any
    # other CAREamics N2V model (and its bioimage.io export like theirs).
    return ("C" if n_channels > 1 else "") + ("ZYX" if ndim == 3 else "YX")


def _to_careamics(item: np.ndarray) -> np.ndarray:
    """(C, *spatial) -> the array layout of :func:`_careamics_axes`."""
    return item[0] if item.shape[0] == 1 else item


def _make_config(
    settings: N2VSettings,
    n_channels: int,
    ndim: int,
    patch: tuple[int, ...] | None = None,
    trainer_params: dict | None = None,
):
    from careamics.config.factories.n2v_factory import create_advanced_n2v_config

    patch = patch or ((settings.patch_size_z,) if ndim == 3 else ()) + (settings.patch_size,) * 2
    augment = None if settings.augment else []
    if settings.augment and settings.struct_mask != "none":
        # Rotating patches would turn the direction of correlated noise away from the mask.
        augment = ["x_flip", "y_flip"]
    try:
        return create_advanced_n2v_config(
            experiment_name="napari-dlbio-n2v",
            data_type="array",
            axes=_careamics_axes(n_channels, ndim),
            patch_size=list(patch),
            batch_size=settings.batch_size,
            num_epochs=settings.epochs,
            num_steps=settings.steps_per_epoch,
            n_channels=n_channels if n_channels > 1 else None,
            augmentations=augment,
            independent_channels=settings.independent_channels,
            normalization=settings.normalize,
            use_n2v2=settings.algorithm == "n2v2",
            roi_size=settings.roi_size,
            masked_pixel_percentage=settings.masked_percent,
            struct_n2v_axes=settings.struct_mask,
            struct_n2v_span=settings.struct_span,
            num_workers=0,  # worker processes cost more than they save on small in-memory data
            trainer_params={
                "enable_model_summary": False,
                "num_sanity_val_steps": 0,
                "log_every_n_steps": max(1, min(10, settings.steps_per_epoch)),
                **(trainer_params or {}),
            },
            model_params={"depth": settings.depth, "num_channels_init": settings.base_filters},
            optimizer="Adam",
            optimizer_params={"lr": settings.learning_rate},
            # Our callback sets the learning rate every batch (cosine over epochs or the time
            # budget, as training.fit does); a StepLR that never steps leaves it alone.
            lr_scheduler="StepLR",
            lr_scheduler_params={"step_size": 10**9},
            seed=settings.seed + 1,  # CAREamics needs a positive seed
        )
    except ValueError as exc:  # pydantic errors of CAREamics' configuration
        raise ValueError(f"invalid Noise2Void settings for CAREamics: {exc}") from exc


def _settings_from_config(cfg) -> N2VSettings:
    """Our settings describing a CAREamics configuration (checkpoints, bioimage.io zips)."""
    model = cfg.algorithm_config.model
    manip = cfg.algorithm_config.n2v_config
    patch = list(cfg.data_config.patching.patch_size)
    struct = manip.struct_mask
    norm = cfg.data_config.normalization.name
    return N2VSettings(
        algorithm="n2v2" if model.n2v2 else "n2v",
        patch_size=_pow2_floor(patch[-1], 16),
        patch_size_z=_pow2_floor(patch[0], 4) if len(patch) == 3 else 16,
        depth=min(model.depth, 5),
        base_filters=model.num_channels_init,
        independent_channels=model.independent_channels,
        struct_mask=struct.axes if struct is not None else "none",
        struct_span=struct.span if struct is not None else 5,
        masked_percent=manip.masked_pixel_percentage,
        roi_size=manip.roi_size,
        normalization=Normalization(mode="none"),  # a CAREamics model knows only its own
        normalize=norm if norm in ("mean_std", "min_max", "none") else "mean_std",
        batch_size=cfg.data_config.batch_size,
    )


def _pow2_floor(v: int, lo: int) -> int:
    return max(lo, 1 << (max(1, int(v)).bit_length() - 1))


def _fit_patch(settings: N2VSettings, shapes: list[tuple[int, ...]], ndim: int) -> tuple[int, ...]:
    """The configured patch, shrunk (to a power of two) where an image is smaller."""
    want = ((settings.patch_size_z,) if ndim == 3 else ()) + (settings.patch_size,) * 2
    smallest = [min(s[d] for s in shapes) for d in range(ndim)]
    yx = min(want[-1], _pow2_floor(min(smallest[-2:]), 1))
    out = ((min(want[0], _pow2_floor(smallest[0], 1)),) if ndim == 3 else ()) + (yx, yx)
    need = 2**settings.depth
    least = max(16 if ndim == 2 else 8, need)
    if min(out[-2:]) < least or min(out) < max(4, need):
        raise ValueError(
            f"the training images are too small for Noise2Void: the smallest is {tuple(smallest)} "
            f"pixels, patches need at least {least} in Y and X (with a U-Net depth of {settings.depth})"
        )
    return out


# ---------------------------------------------------------------------------------------
# Progress, cancel, time budget and learning rate: one Lightning callback


def _make_callback(ctx: JobContext, settings: N2VSettings, deadline: Deadline, total_steps: int):
    from lightning.pytorch import Callback

    from ..training import _lr

    class Progress(Callback):
        def __init__(self) -> None:
            self.step = 0
            self.losses: list[float] = []
            self.history: list[dict[str, float]] = []
            self.stopped = "completed"
            self.start = time.monotonic()
            self.average: list | None = None

        def _done(self) -> float:
            return max(self.step / total_steps, deadline.fraction)

        def on_fit_start(self, trainer, module) -> None:
            # CAREamist.train resets this to "all" just before fitting; a few batches of
            # validation patches are enough to follow the loss and cost far less time.
            trainer.limit_val_batches = settings.val_batches

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            lr = _lr(settings.learning_rate, self._done(), self.step)
            for opt in trainer.optimizers:
                for g in opt.param_groups:
                    g["lr"] = lr

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            loss = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    "the training loss became NaN/inf; lower the learning rate or check the data"
                )
            self.step += 1
            self.losses.append(loss)
            if settings.average_last > 0 and self._done() >= 1 - settings.average_last:
                self._update_average(module)
            epoch = trainer.current_epoch + 1
            ctx.report(self._done(), 1.0, f"epoch {epoch}, step {self.step}", loss=loss)
            if ctx.cancelled:
                self.stopped = "cancelled"
                trainer.should_stop = True
                trainer.limit_val_batches = 0  # stop now: no validation of a partial epoch
            elif deadline.passed() and self.stopped == "completed":
                self.stopped = "time budget"
                trainer.should_stop = True

        def _update_average(self, module) -> None:
            # Stochastic weight averaging over the last part of the (cosine-annealed) run,
            # with batch-norm statistics accumulated over the same steps instead of the
            # last few noisy batches.
            import torch

            net = module.model
            params = [p.detach() for p in net.parameters()]
            if self.average is None:
                self.average = [p.clone() for p in params]
                self.n_average = 1
                for m in net.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.reset_running_stats()
                        m.momentum = None  # cumulative average from now on
                return
            self.n_average += 1
            with torch.no_grad():
                for a, p in zip(self.average, params):
                    a.add_(p - a, alpha=1.0 / self.n_average)

        def apply_average(self, net) -> None:
            """Put the averaged weights into ``net``; batch norm goes back to its usual momentum."""
            import torch

            if self.average is None:
                return
            with torch.no_grad():
                for p, a in zip(net.parameters(), self.average):
                    p.copy_(a.to(p.device))
            for m in net.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = 0.1

        def on_train_epoch_end(self, trainer, module) -> None:
            if self.stopped == "cancelled" or not self.losses:
                return  # a cancelled epoch is not a finished one (as in training.fit)
            train_loss = float(np.mean(self.losses))
            self.losses = []
            val = trainer.callback_metrics.get("val_loss")
            entry = {"epoch": len(self.history) + 1, "train_loss": train_loss,
                     "seconds": time.monotonic() - self.start}
            if val is not None and math.isfinite(float(val)):
                entry["val_loss"] = float(val)
            self.history.append(entry)
            extra = {"val_loss": entry["val_loss"]} if "val_loss" in entry else {}
            ctx.report(
                self._done(), 1.0,
                f"epoch {entry['epoch']}: loss {train_loss:.4f}"
                + (f", val {extra['val_loss']:.4f}" if extra else ""),
                epoch=entry["epoch"], train_loss=train_loss, **extra,
            )

    return Progress()


# ---------------------------------------------------------------------------------------
# Test-time augmentation


def _dihedral(net, x, tta: bool):
    """``net(x)`` averaged over the 8 flips/rotations of the last two axes (YX)."""
    import torch

    if not tta:
        return net(x)
    acc = None
    for k in range(4):
        for flip in (False, True):
            y = torch.rot90(x, k, dims=(-2, -1))
            if flip:
                y = torch.flip(y, dims=(-1,))
            out = net(y)
            if flip:
                out = torch.flip(out, dims=(-1,))
            out = torch.rot90(out, -k, dims=(-2, -1))
            acc = out if acc is None else acc + out
    return acc / 8.0


# ---------------------------------------------------------------------------------------
# The model


class N2VModel:
    backend: ClassVar[str] = "n2v"
    output: ClassVar[str] = "image"

    def __init__(self, settings: N2VSettings, n_channels: int, ndim: int, config, module,
                 name: str = "n2v") -> None:
        self.settings = settings
        self.n_channels = int(n_channels)
        self.ndim = int(ndim)
        self.config = config        # CAREamics Configuration (with the normalisation statistics)
        self.module = module        # CAREamics N2VModule (Lightning); .model is the U-Net
        self.info: ModelInfo | None = None
        self.name = name

    # -- prediction ---------------------------------------------------------------------
    def _normalization(self):
        from careamics.dataset.normalization.normalization_factory import create_normalization

        norm = self.config.data_config.normalization
        if getattr(norm, "needs_computation", lambda: False)():
            raise ModelError("this Noise2Void model has not been trained yet (no intensity statistics)")
        return create_normalization(norm)

    def _pre(self, item: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-image percentile normalisation (a new array) and its ``lo``/``hi`` to undo it."""
        n = self.settings.normalization
        if n.mode == "none":
            one = np.ones((item.shape[0],) + (1,) * (item.ndim - 1), np.float32)
            return np.array(item, np.float32), 0 * one, one
        axes = tuple(range(1, item.ndim)) if n.per_channel else None
        lo, hi = np.percentile(item, [n.low, n.high], axis=axes, keepdims=True)
        if not n.per_channel:
            lo = np.broadcast_to(lo, (item.shape[0],) + (1,) * (item.ndim - 1))
            hi = np.broadcast_to(hi, lo.shape)
        hi = np.maximum(hi, lo + 1e-6)
        return ((item - lo) / (hi - lo)).astype(np.float32), lo.astype(np.float32), hi.astype(np.float32)

    def _check_item(self, item: np.ndarray) -> np.ndarray:
        item = np.asarray(item, dtype=np.float32)
        if item.ndim != self.ndim + 1:
            raise ValueError(
                f"a {self.ndim}D Noise2Void model takes items (C, {'Z, ' if self.ndim == 3 else ''}Y, X), "
                f"got shape {item.shape}"
            )
        if item.shape[0] != self.n_channels:
            raise ValueError(f"the model takes {self.n_channels} channel(s), the image has {item.shape[0]}")
        check_image(item)
        return item

    def predict(self, item: np.ndarray, settings: PredictSettings | None, ctx: JobContext | None = None
                ) -> dict[str, np.ndarray]:
        import torch

        from ..device import release, select_device
        from ..tiling import predict_tiled, with_oom_retry

        ctx = ctx or JobContext()
        settings = settings or N2VPredict()
        tta = bool(getattr(settings, "tta", True))
        item = self._check_item(item)
        norm = self._normalization()
        pre, lo, hi = self._pre(item)  # a new array: the caller's item is never changed
        x, _ = norm(pre)
        device = select_device(settings.device)
        net = self.module.model.to(device).eval()
        multiple = 2 ** self.config.algorithm_config.model.depth
        tile = settings.tile_size
        if tile is None and np.prod(item.shape[1:]) > (1024**2 if self.ndim == 2 else 128**3):
            tile = 512 if self.ndim == 2 else 128  # large items: tiles keep memory bounded

        def fn(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = _dihedral(net, torch.from_numpy(np.ascontiguousarray(batch)).to(device), tta)
            return out.float().cpu().numpy()

        def run(tile_, batch_size):
            return predict_tiled(fn, x, item.shape[0], tile_, settings.tile_overlap, multiple,
                                 batch_size=batch_size, ctx=ctx)

        try:
            out = with_oom_retry(run, tile, settings.batch_size)
        finally:
            net.cpu()
            release(device)
        den = norm.denormalize(torch.from_numpy(out[None]))[0].numpy()
        den = den * (hi - lo) + lo
        return {"image": den.astype(np.float32, copy=False)}

    # -- training -----------------------------------------------------------------------
    def train(self, train: list, val: list, settings: TrainSettings, ctx: JobContext):
        from careamics import CAREamist

        from ..training import FitResult

        if not train:
            raise ValueError("no training images")
        # Fine-tuning: the loaded network's architecture wins, the new training fields apply.
        fields = settings.model_dump()
        fields.update({k: getattr(self.settings, k) for k in ARCH_FIELDS})
        settings = N2VSettings(**{k: v for k, v in fields.items() if k in N2VSettings.model_fields})
        for s in train + val:
            self._check_item(s.image)
        shapes = [s.image.shape[1:] for s in train + val]
        patch = _fit_patch(settings, shapes, self.ndim)
        train_arrays = [_to_careamics(self._pre(s.image)[0]) for s in train]
        # Without held-out images, follow the masked loss on (other random masks of) the
        # training images: CAREamics' own split would take patches out of a small image.
        val_arrays = [_to_careamics(self._pre(s.image)[0]) for s in val] or train_arrays[:8]
        train_arrays = train_arrays * self._repeats(settings, train, patch)

        accel = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "mps": "mps"}[settings.device]
        if accel != "auto":
            from ..device import select_device

            select_device(settings.device)  # a clear error if that device is missing
        cfg = _make_config(settings, self.n_channels, self.ndim, patch, {"accelerator": accel})
        old_norm = self.config.data_config.normalization
        if not getattr(old_norm, "needs_computation", lambda: True)():
            # Keep the statistics the network was trained with when fine-tuning.
            cfg.data_config.normalization = old_norm.model_copy()
        deadline = Deadline(settings.minutes)
        total = settings.epochs * settings.steps_per_epoch
        callback = _make_callback(ctx, settings, deadline, total)
        ctx.check()
        workdir = Path(tempfile.mkdtemp(prefix="napari-dlbio-n2v-"))
        start = time.monotonic()
        try:
            cam = CAREamist(cfg, work_dir=workdir, callbacks=[callback], enable_progress_bar=False)
            cam.model.model.load_state_dict(self.module.model.state_dict())
            cam.train(train_data=train_arrays, val_data=val_arrays)
            cam.model.cpu()
            callback.apply_average(cam.model.model)
            self.module, self.config = cam.model, cam.config
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.settings = settings
        hist = callback.history
        result = FitResult(history=hist, stopped=callback.stopped, seconds=time.monotonic() - start)
        if hist:
            # N2V's validation loss compares with noisy pixels, so there is no meaningful
            # "best" epoch: the last weights are kept (as CAREamics does).
            result.best_epoch = len(hist)
            result.best_loss = hist[-1].get("val_loss", hist[-1]["train_loss"])
        if callback.stopped == "completed" and hist and len(hist) < settings.epochs:
            result.stopped = "time budget" if deadline.passed() else "completed"
        return result

    def _repeats(self, settings: N2VSettings, train: list, patch: tuple[int, ...]) -> int:
        # CAREamics' epoch is one pass over stratified patches; a single small image gives
        # one batch. Listing the (same) arrays several times makes an epoch hold
        # ``steps_per_epoch`` batches, so validation does not run after every step.
        from careamics.dataset.patching.stratified_patching import StratifiedPatching

        shapes = [(1, *s.image.shape) for s in train]
        n = StratifiedPatching(shapes, list(patch), seed=0).n_patches
        need = settings.steps_per_epoch * settings.batch_size
        return int(min(1000, max(1, math.ceil(need / max(n, 1)))))

    # -- evaluation: there is no clean target, so report the self-supervised loss ------
    def evaluate(self, samples: list, ctx: JobContext) -> dict[str, Any]:
        """Masked N2V loss on held-out images (lower is better; the noise sets its floor).

        N2V has no clean target, so no PSNR is claimed; this loss compares predictions
        with noisy pixels and is only comparable between models on the same data.
        """
        import torch
        from careamics.losses import n2v_loss
        from careamics.lightning.modules.n2v_utils import N2VManipulate

        if not samples:
            return {"n_val": 0}
        norm = self._normalization()
        manip = N2VManipulate(self.config.algorithm_config.n2v_config.model_copy(update={"seed": 12345}))
        net = self.module.model.cpu().eval()
        mult = 2 ** self.config.algorithm_config.model.depth
        losses = []
        with torch.no_grad():
            for s in samples:
                ctx.check()
                x, _ = norm(self._pre(self._check_item(s.image))[0])
                crop = tuple(slice(0, d // mult * mult) for d in x.shape[1:])
                x = x[(slice(None),) + crop]
                if min(x.shape[1:]) < mult:
                    continue
                t = torch.from_numpy(np.ascontiguousarray(x))[None]
                masked, original, mask = manip(t)
                losses.append(float(n2v_loss(net(masked), original, mask)))
        out: dict[str, Any] = {"n_val": len(samples)}
        if losses:
            out["n2v_val_loss"] = float(np.mean(losses))
        return out

    # -- files --------------------------------------------------------------------------
    def save_weights(self, folder: Path) -> None:
        """CAREamics' own configuration (YAML) and a checkpoint CAREamics can load."""
        from careamics.config.utils.configuration_io import save_configuration

        folder = Path(folder)
        save_configuration(self.config, folder / CONFIG_FILE)
        _write_checkpoint(self.module, self.config, folder / CHECKPOINT_FILE)


def _write_checkpoint(module, cfg, path: Path) -> None:
    # The keys CAREamics' own checkpoints carry (Lightning's plus CAREamics' config), so
    # ``CAREamist(checkpoint_path=...)`` and ``N2VModule.load_from_checkpoint`` read it.
    import careamics
    import lightning
    import torch

    ckpt = {
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "hyper_parameters": {"algorithm_config": cfg.algorithm_config.model_dump(mode="json")},
        "pytorch-lightning_version": lightning.__version__,
        "careamics_info": {
            "version": getattr(cfg, "version", careamics.__version__),
            "experiment_name": cfg.experiment_name,
            "training_config": cfg.training_config.model_dump(mode="json"),
        },
        "datamodule_hyper_parameters": {"data_config": cfg.data_config.model_dump(mode="json")},
    }
    torch.save(ckpt, path)


def _model_from_careamics(cfg, module, name: str) -> N2VModel:
    axes = cfg.data_config.axes
    ndim = 3 if "Z" in axes else 2
    n_channels = int(cfg.algorithm_config.model.in_channels)
    settings = _settings_from_config(cfg)
    module.cpu().eval()
    return N2VModel(settings, n_channels, ndim, cfg, module, name=name)


def _load_checkpoint(path: Path, name: str) -> N2VModel:
    from careamics.lightning.utils import load_config_from_checkpoint, load_module_from_checkpoint

    try:
        cfg = load_config_from_checkpoint(path)
        module = load_module_from_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - corrupt/foreign files: say which file and why
        raise ModelError(f"cannot read the CAREamics checkpoint {path}: {exc}") from exc
    return _model_from_careamics(cfg, module, name)


# ---------------------------------------------------------------------------------------
# bioimage.io


def export_bioimageio(
    model: N2VModel,
    path: str | Path,
    name: str | None = None,
    description: str | None = None,
    authors: list[dict] | None = None,
    example: np.ndarray | None = None,
) -> Path:
    """Write ``model`` as a bioimage.io model zip with CAREamics' exporter; returns the zip path.

    ``example``: an input item ``(C, *spatial)`` in raw intensities used as the zip's test
    input/output (default: a smooth synthetic image of 256 px, 16 px deep in 3D). The
    export runs offline.
    """
    from careamics import CAREamist

    path = Path(path).expanduser()
    if path.suffix.lower() != ".zip":
        path = path.with_suffix(".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    if example is None:
        example = _example_input(model)
    example = model._pre(model._check_item(example))[0]
    mult = 2 ** model.config.algorithm_config.model.depth
    example = example[(slice(None),) + tuple(slice(0, max(mult, d // mult * mult)) for d in example.shape[1:])]
    title = name or (model.info.name if model.info is not None else model.name)
    friendly = "".join(c if c.isalnum() or c in "-_()" else "_" for c in title) or "n2v"
    prov = model.info.provenance if model.info is not None else {}
    workdir = Path(tempfile.mkdtemp(prefix="napari-dlbio-n2v-export-"))
    try:
        cam = CAREamist(model.config, work_dir=workdir, enable_progress_bar=False)
        cam.model.load_state_dict(model.module.state_dict())
        cam.export_to_bmz(
            path_to_archive=path,
            friendly_model_name=friendly,
            input_array=_to_careamics(example),
            authors=authors or [{"name": "napari-dlbio user"}],
            general_description=description or _description(model),
            data_description=f"Trained on: {', '.join(s.get('image', '?') for s in prov.get('sources', []))}"
            if prov.get("sources") else "Self-supervised training on the user's noisy images.",
        )
    except Exception as exc:  # noqa: BLE001 - exporter errors come from many packages
        raise ModelError(f"bioimage.io export to {path} failed: {exc}") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return path


def _description(model: N2VModel) -> str:
    text = f"Noise2Void ({model.settings.algorithm.upper()}) denoiser trained with napari-dlbio and CAREamics."
    n = model.settings.normalization
    if n.mode == "percentile":
        # The zip holds CAREamics' own normalisation only; say what else the input needs.
        text += (f" Inputs must first be normalised per image: percentile {n.low:g} -> 0 and "
                 f"{n.high:g} -> 1{' per channel' if n.per_channel else ''} (napari-dlbio does this itself).")
    return text


def _normalization_in_zip(path: Path) -> Normalization | None:
    """The per-image normalisation a zip exported by napari-dlbio states in its description."""
    import re
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            rdf = next((n for n in z.namelist() if n.endswith(("rdf.yaml", "bioimageio.yaml"))), None)
            text = z.read(rdf).decode("utf-8", "replace") if rdf else ""
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    text = " ".join(text.split())  # YAML may fold a long description over lines
    m = re.search(r"percentile ([0-9.]+) -> 0 and ([0-9.]+) -> 1( per channel)?", text)
    if m is None:
        return None
    return Normalization(mode="percentile", low=float(m.group(1)), high=float(m.group(2)),
                         per_channel=bool(m.group(3)))


def _example_input(model: N2VModel) -> np.ndarray:
    stats = model.config.data_config.normalization
    mean = float(np.mean(getattr(stats, "input_means", None) or [0.0]))
    std = float(np.mean(getattr(stats, "input_stds", None) or [1.0]))
    shape = (model.n_channels,) + ((16,) if model.ndim == 3 else ()) + (256, 256)
    rng = np.random.default_rng(0)
    return (mean + std * rng.standard_normal(shape)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# The backend object


class _N2VBackend:
    name = "n2v"
    title = "Noise2Void (CAREamics)"
    output = "image"
    layer_suffix = "n2v"   # output layers are named "<image>_n2v"
    Settings = N2VSettings
    Predict = N2VPredict
    requires = ("torch", "careamics")
    export_bioimageio = staticmethod(export_bioimageio)

    def new(self, settings: TrainSettings, n_channels: int, ndim: int) -> N2VModel:
        from careamics.lightning.modules import create_module

        if not isinstance(settings, N2VSettings):
            settings = N2VSettings(**{k: v for k, v in settings.model_dump().items() if k in N2VSettings.model_fields})
        if ndim not in (2, 3):
            raise ValueError(f"Noise2Void works on 2D or 3D items, not {ndim}D")
        cfg = _make_config(settings, n_channels, ndim)
        import torch

        torch.manual_seed(settings.seed)
        return N2VModel(settings, n_channels, ndim, cfg, create_module(cfg.algorithm_config))

    def load(self, info: ModelInfo) -> N2VModel:
        ckpt = Path(info.path) / CHECKPOINT_FILE
        if not ckpt.is_file():
            raise ModelError(f"{info.path} has no {CHECKPOINT_FILE}; the Noise2Void model is incomplete")
        model = _load_checkpoint(ckpt, info.name)
        try:
            model.settings = N2VSettings(**info.settings)
        except ValueError:
            pass  # settings from another version: those read from CAREamics' config stand
        model.info = info
        return model

    def pretrained(self, name_or_path: str) -> N2VModel:
        """A bioimage.io zip exported by CAREamics, or a CAREamics checkpoint (file or folder)."""
        p = Path(str(name_or_path)).expanduser()
        if p.is_dir():
            ckpts = sorted(p.glob("*.ckpt"), key=lambda f: f.stat().st_mtime)
            zips = sorted(p.glob("*.zip"))
            if not ckpts and not zips:
                raise ModelError(f"{p} holds no CAREamics checkpoint (.ckpt) or bioimage.io zip")
            p = ckpts[-1] if ckpts else zips[0]
        if p.is_file() and p.suffix.lower() == ".zip":
            from careamics.model_io.bmz_io import load_from_bmz

            try:
                cfg, module = load_from_bmz(p)
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"cannot load the bioimage.io model {p}: {exc}") from exc
            if cfg.algorithm_config.algorithm != "n2v":
                raise ModelError(f"{p} is a CAREamics {cfg.algorithm_config.algorithm} model, not Noise2Void")
            model = _model_from_careamics(cfg, module, p.stem)
            norm = _normalization_in_zip(p)
            if norm is not None:
                model.settings = model.settings.model_copy(update={"normalization": norm})
            return model
        if p.is_file() and p.suffix.lower() == ".ckpt":
            return _load_checkpoint(p, p.stem)
        if p.exists():
            raise ModelError(f"{p} is neither a bioimage.io zip nor a CAREamics checkpoint (.ckpt)")
        raise ModelError(
            f"no file {name_or_path!r}: Noise2Void models are trained on your own images; "
            "to use another model give its bioimage.io .zip or CAREamics .ckpt file "
            "(downloading models by name is not supported offline)"
        )


BACKEND = _N2VBackend()
