"""The backend object of Noise2Void."""

from __future__ import annotations

from pathlib import Path

from ...config import TrainSettings
from ...store import ModelError, ModelInfo
from .bioimageio import _normalization_in_zip, export_bioimageio
from .config import _make_config
from .model import CHECKPOINT_FILE, N2VModel, _load_checkpoint, _model_from_careamics
from .settings import N2VPredict, N2VSettings


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
