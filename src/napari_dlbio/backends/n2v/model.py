"""The restoration model (N2V, N2V2, CARE, N2N): prediction, training, evaluation, its checkpoint."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...blocks import unet_radius
from ...config import PredictSettings, TrainSettings
from ...jobs import Deadline, JobContext
from ...normalize import percentile_bounds
from ...pairs import check_pairs
from ...store import ModelError, ModelInfo
from ...training import FitResult
from ...tta import averaged
from ..base import BlockNeeds, ModelBase
from .callback import Progress
from .config import _fit_patch, _make_config, _settings_from_config, _to_careamics, normalization_in_zip
from .settings import Settings
from .spec import SPEC

CONFIG_FILE = "careamics.yaml"
CHECKPOINT_FILE = "n2v.ckpt"


class N2VModel(ModelBase):
    spec = SPEC

    def __init__(self, settings: Settings, n_channels: int, ndim: int, config, module,
                 name: str = "n2v") -> None:
        self.settings = settings
        self.n_channels = int(n_channels)
        self.ndim = int(ndim)
        self.config = config        # CAREamics Configuration (with the normalisation statistics)
        self.module = module        # CAREamics N2VModule (Lightning); .model is the U-Net
        self.info: ModelInfo | None = None
        self.name = name

    @property
    def layer_suffix(self) -> str:
        """Outputs are named after the algorithm's family: ``<image>_n2v``, ``_care``, ``_n2n``."""
        return self.settings.family

    # -- construction -----------------------------------------------------------------
    @classmethod
    def new(cls, settings: TrainSettings, n_channels: int, ndim: int) -> N2VModel:
        from careamics.lightning.modules import create_module

        if ndim not in (2, 3):
            raise ValueError(f"restoration models work on 2D or 3D items, not {ndim}D")
        cfg = _make_config(settings, n_channels, ndim)
        import torch

        torch.manual_seed(settings.seed)
        return cls(settings, n_channels, ndim, cfg, create_module(cfg.algorithm_config))

    @classmethod
    def load(cls, info: ModelInfo) -> N2VModel:
        ckpt = Path(info.path) / CHECKPOINT_FILE
        if not ckpt.is_file():
            raise ModelError(f"{info.path} has no {CHECKPOINT_FILE}; the Noise2Void model is incomplete")
        model = _load_checkpoint(ckpt, info.name)
        try:
            model.settings = Settings(**info.settings)
        except ValueError:
            pass  # settings from another version: those read from CAREamics' config stand
        return model

    @classmethod
    def pretrained(cls, name_or_path: str) -> N2VModel:
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
            if cfg.algorithm_config.algorithm not in ("n2v", "care", "n2n"):
                raise ModelError(f"{p} is a CAREamics {cfg.algorithm_config.algorithm} model, not N2V, CARE "
                                 "or Noise2Noise")
            model = _model_from_careamics(cfg, module, p.stem)
            norm = normalization_in_zip(p)
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

    # -- prediction ---------------------------------------------------------------------
    def _normalization(self):
        from careamics.dataset.normalization.normalization_factory import create_normalization

        norm = self.config.data_config.normalization
        if norm.needs_computation():
            raise ModelError("this restoration model has not been trained yet (no intensity statistics)")
        return create_normalization(norm)

    def block_needs(self, settings: PredictSettings) -> BlockNeeds:
        """Halo: the U-Net's receptive field (the core then equals whole-image output); pooling-grid origins."""
        depth = int(self.config.algorithm_config.model.depth)
        return BlockNeeds(halo=unet_radius(depth), multiple=2**depth)

    def _pre(self, item: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-image percentile normalisation (a new array) and its ``lo``/``scale`` to undo it."""
        lo, scale = percentile_bounds(item, self.settings.normalization)
        return ((item - lo) / scale).astype(np.float32), lo, scale

    def predict(self, item: np.ndarray, settings: PredictSettings | None, ctx: JobContext | None = None
                ) -> dict[str, np.ndarray]:
        import torch

        from ...device import auto_tile, release, select_device
        from ...tiling import predict_tiled, with_oom_retry

        ctx = ctx or JobContext()
        settings = self.coerce_predict(settings)
        tta = settings.tta
        item = self.check_item(item)
        norm = self._normalization()
        pre, lo, scale = self._pre(item)  # a new array: the caller's item is never changed
        x, _ = norm(pre)
        device = select_device(settings.device)
        net = self.module.model.to(device).eval()
        multiple = 2 ** self.config.algorithm_config.model.depth
        # Test-time averaging keeps more full-resolution maps per filter than the other networks.
        filters = self.config.algorithm_config.model.num_channels_init
        tile = settings.tile_size or auto_tile(item.shape[1:], multiple, 768 * filters, device)

        def fn(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = averaged(net, torch.from_numpy(np.ascontiguousarray(batch)).to(device),
                               "dihedral" if tta else "none")
            return out.float().cpu().numpy()

        def run(tile_, batch_size):
            # The receptive radius as margin: tiled output equals one-tile output (no seams).
            return predict_tiled(fn, x, item.shape[0], tile_, settings.tile_overlap, multiple,
                                 batch_size=batch_size, ctx=ctx, margin=self.block_needs(settings).halo)

        try:
            out = with_oom_retry(run, tile, settings.batch_size)
        finally:
            net.cpu()
            release(device)
        den = norm.denormalize(torch.from_numpy(out[None]))[0].numpy()
        den = den * scale + lo
        return {"image": den.astype(np.float32, copy=False)}

    # -- training -----------------------------------------------------------------------
    def train(self, train: list, val: list, settings: TrainSettings, ctx: JobContext):
        """Train with CAREamics (Lightning); the last weights are kept, averaged (see :mod:`.callback`)."""
        from ...recipe import FIT_RESERVE_S, FIT_SHARE

        if not train:
            raise ValueError("no training images")
        settings = self.merge_settings(settings)  # fine-tuning keeps the architecture
        for s in train + val:
            self.check_item(s.image)
        if settings.needs_targets():
            check_pairs(train + val, settings.algorithm)
        patch = _fit_patch(settings, [s.image.shape[1:] for s in train + val], self.ndim)
        cfg = self._config(settings, patch)
        deadline = ctx.budget(settings.minutes).before(FIT_SHARE, FIT_RESERVE_S)
        callback = Progress(ctx, settings, deadline, settings.epochs * settings.steps_per_epoch)
        ctx.check()
        self._fit(cfg, callback, self._arrays(settings, train, val, patch))
        self.settings = settings
        return _result(callback, settings, deadline)

    def _pre_pair(self, s) -> tuple[np.ndarray, np.ndarray | None]:
        """Input and target normalised with the input's percentiles (undone on the output alike)."""
        x, lo, scale = self._pre(s.image)
        if s.target_image is None:
            return _to_careamics(x), None
        return _to_careamics(x), _to_careamics(((s.target_image - lo) / scale).astype(np.float32))

    def _arrays(self, settings: Settings, train: list, val: list, patch) -> dict[str, list | None]:
        """``CAREamist.train``'s data arguments (targets only for CARE/N2N)."""
        pairs = settings.needs_targets()
        tr = [self._pre_pair(s) for s in train]
        # Without held-out images, follow the loss on (other random patches of) the
        # training images: CAREamics' own split would take patches out of a small image.
        va = [self._pre_pair(s) for s in val] or tr[:8]
        n = self._repeats(settings, train, patch)
        return {
            "train_data": [x for x, _ in tr] * n,
            "val_data": [x for x, _ in va],
            "train_data_target": [t for _, t in tr] * n if pairs else None,
            "val_data_target": [t for _, t in va] if pairs else None,
        }

    def _config(self, settings: Settings, patch):
        accel = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "mps": "mps"}[settings.device]
        if accel != "auto":
            from ...device import select_device

            select_device(settings.device)  # a clear error if that device is missing
        cfg = _make_config(settings, self.n_channels, self.ndim, patch, {"accelerator": accel})
        old_norm = self.config.data_config.normalization
        if not old_norm.needs_computation():
            # Keep the statistics the network was trained with when fine-tuning.
            cfg.data_config.normalization = old_norm.model_copy()
        return cfg

    def _fit(self, cfg, callback: Progress, arrays: dict) -> None:
        from careamics import CAREamist

        workdir = Path(tempfile.mkdtemp(prefix="napari-dlbio-n2v-"))
        try:
            cam = CAREamist(cfg, work_dir=workdir, callbacks=[callback], enable_progress_bar=False)
            cam.model.model.load_state_dict(self.module.model.state_dict())
            cam.train(**arrays)
            cam.model.cpu()
            callback.apply_average(cam.model.model)
            self.module, self.config = cam.model, cam.config
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _repeats(self, settings: Settings, train: list, patch: tuple[int, ...]) -> int:
        # CAREamics' epoch is one pass over stratified patches; a single small image gives
        # one batch. Listing the (same) arrays several times makes an epoch hold
        # ``steps_per_epoch`` batches, so validation does not run after every step.
        from careamics.dataset.patching.stratified_patching import StratifiedPatching

        shapes = [(1, *s.image.shape) for s in train]
        n = StratifiedPatching(shapes, list(patch), seed=0).n_patches
        need = settings.steps_per_epoch * settings.batch_size
        return int(min(1000, max(1, math.ceil(need / max(n, 1)))))

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, samples: list, ctx: JobContext, raw: list | None = None) -> dict[str, Any]:
        """N2V: the masked loss on held-out images; CARE/N2N: the loss and PSNR on held-out pairs."""
        from .scores import masked_loss, pair_scores

        if self.settings.needs_targets():
            return pair_scores(self, samples, ctx)
        return masked_loss(self, samples, ctx)

    # -- files --------------------------------------------------------------------------
    def bioimageio(self):
        from .bioimageio import parts

        return parts(self)

    @classmethod
    def from_bioimageio(cls, rdf, zip_path: Path, folder: Path) -> N2VModel:
        """CAREamics' own N2V/CARE/N2N packages (their architecture is CAREamics' UNet)."""
        sd = getattr(rdf.weights, "pytorch_state_dict", None)
        if sd is None or "careamics" not in str(getattr(sd.architecture, "import_from", "")):
            raise ModelError(f"Restoration: {rdf.name} is not a CAREamics model")
        return cls.pretrained(str(zip_path))

    def save_weights(self, folder: Path) -> None:
        """CAREamics' own configuration (YAML) and a checkpoint CAREamics can load."""
        from careamics.config.utils.configuration_io import save_configuration

        folder = Path(folder)
        save_configuration(self.config, folder / CONFIG_FILE)
        _write_checkpoint(self.module, self.config, folder / CHECKPOINT_FILE)


def _result(callback: Progress, settings: Settings, deadline: Deadline) -> FitResult:
    hist = callback.history
    result = FitResult(history=hist, stopped=callback.stopped, seconds=time.monotonic() - callback.start)
    if hist:
        # N2V's validation loss compares with noisy pixels, so there is no meaningful
        # "best" epoch: the last weights are kept (as CAREamics does).
        result.best_epoch = len(hist)
        result.best_loss = hist[-1].get("val_loss", hist[-1]["train_loss"])
    if callback.stopped == "completed" and hist and len(hist) < settings.epochs:
        result.stopped = "time budget" if deadline.passed() else "completed"
    return result


def _write_checkpoint(module, cfg, path: Path) -> None:
    # The keys CAREamics' own checkpoints carry (Lightning's plus CAREamics' config), so
    # ``CAREamist(checkpoint_path=...)`` and ``N2VModule.load_from_checkpoint`` read it.
    import lightning
    import torch

    ckpt = {
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "hyper_parameters": {"algorithm_config": cfg.algorithm_config.model_dump(mode="json")},
        "pytorch-lightning_version": lightning.__version__,
        "careamics_info": {
            "version": cfg.version,
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
