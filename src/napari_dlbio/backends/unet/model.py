"""The U-Net backend: the model (train / predict / save) and the BACKEND object.

Two modes. *Instance*: the network predicts background / interior / boundary and
a seeded watershed turns that into one label per nucleus or cell. *Semantic*: one
class per label value; with ``labels_zero="unannotated"`` (scribbles) the value 0
is ignored by the loss and never predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import device as devices
from ... import store
from ...config import PredictSettings, TrainSettings
from ...data import Sample
from ...jobs import Cancelled, JobContext
from ...normalize import check_image, percentile_normalize
from ...patches import augment, random_patch
from ...tiling import predict_tiled, with_oom_retry
from ...training import FitResult, fit
from ...tta import averaged
from . import targets as tg
from ..base import ModelBase
from .settings import ARCHITECTURE, Predict, Settings
from .spec import SPEC
from .settings import n_outputs as _n_outputs

WEIGHTS = "weights.pt"
_MAX_TUNE = 30  # validation images used to tune thresholds (bounds the time it takes)


class UNetModel(ModelBase):
    spec = SPEC

    def __init__(self, settings: Settings, n_channels: int, ndim: int):
        if ndim not in (2, 3):
            raise ValueError(f"a U-Net is 2D or 3D, not {ndim}D")
        if n_channels < 1:
            raise ValueError(f"a U-Net needs at least one input channel, not {n_channels}")
        self.settings = settings
        self.n_channels = int(n_channels)
        self.ndim = int(ndim)
        self.info: store.ModelInfo | None = None
        self.net = None
        # Probabilities of the images thresholds were just tuned on, so the runner's
        # evaluation right after training does not run the network on them again.
        self._tuned_probs: dict[int, np.ndarray] = {}
        if _n_outputs(settings) is not None:
            self._build()

    @classmethod
    def new(cls, settings: Settings, n_channels: int, ndim: int) -> UNetModel:
        return cls(settings, n_channels, ndim)

    @classmethod
    def load(cls, info: store.ModelInfo) -> UNetModel:
        settings = cls.settings_from(info)
        if settings.mode == "semantic" and settings.n_classes is None:
            raise store.ModelError(f"{info.path}: a semantic U-Net must record n_classes in model.json")
        model = cls(settings, info.n_channels, info.ndim)
        model.load_weights(info.path)
        return model

    # -- what tasks.evaluate_predictions reads --------------------------------
    @property
    def semantic(self) -> bool:
        return self.settings.mode == "semantic"

    @property
    def n_classes(self) -> int:
        return 3 if not self.semantic else int(self.settings.n_classes or 0)

    def _build(self) -> None:
        import torch

        from .net import UNet

        s = self.settings
        # Seeded initial weights (same settings, same model) without touching the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            self.net = UNet(self.ndim, self.n_channels, _n_outputs(s), s.depth, s.base_width,
                            s.batch_norm, s.dropout)
        self.net.eval()

    # -- training ---------------------------------------------------------------
    def train(
        self, train: list[Sample], val: list[Sample], settings: TrainSettings, ctx: JobContext
    ) -> FitResult:
        import torch

        self._tuned_probs = {}
        self._merge_settings(settings)
        s = self.settings
        if not train:
            raise ValueError("no training samples")
        for smp in train + val:
            self._check_sample(smp)
        if self.net is None:  # semantic: the number of classes comes from the labels
            n = max(int(smp.target.max()) for smp in train + val) + 1
            self.settings = Settings.model_validate({**s.model_dump(), "n_classes": max(n, 2)})
            s = self.settings
            self._build()
        else:
            self._check_classes(train + val)
        ctx.report(0, 1, "preparing training data")
        prep_train = [self._prepare(smp) for smp in train]
        prep_val = [self._prepare(smp) for smp in val]
        weights = self._class_weights(prep_train)

        dev = devices.select_device(s.device)
        net = _to_device(self.net, dev)
        fmt = _memory_format(net, dev)
        amp = _autocast(dev, s.mixed_precision, net.ndim)
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        patch = self._patch()
        w = torch.as_tensor(weights, dtype=torch.float32, device=dev)

        def to_batch(parts):
            xs, ys = [], []
            for x, y, m in parts:
                y = y.astype(np.int64)
                if m is not None:
                    y[~m] = tg.IGNORE
                xs.append(x)
                ys.append(y)
            x = torch.from_numpy(np.stack(xs)).to(dev).contiguous(memory_format=fmt)
            return x, torch.from_numpy(np.stack(ys)).to(dev)

        def next_batch():
            parts = []
            for _ in range(s.batch_size):
                smp = prep_train[int(rng.integers(len(prep_train)))]
                x, y, m = random_patch(smp, patch, rng, s.foreground_patches)
                parts.append(augment(x, y, m, rng))
            return to_batch(parts)

        def loss_fn(batch):
            x, y = batch
            with amp():
                logits = net(x)
            logits = logits.float()
            loss = torch.nn.functional.cross_entropy(logits, y, weight=w, ignore_index=tg.IGNORE)
            if s.dice_weight > 0:
                loss = loss + s.dice_weight * _soft_dice(logits, y)
            return loss

        val_set = self._val_batches(prep_val, patch, to_batch) if prep_val else None
        try:
            result = fit(net, loss_fn, next_batch, (lambda: val_set) if val_set else None, s, ctx)
        finally:
            self.net = net.to("cpu", memory_format=torch.contiguous_format).eval()
            devices.release(dev)
        if s.mode == "instance" and s.tune_thresholds and val and result.best_epoch >= 1:
            try:
                result.metrics["thresholds"] = self.tune_thresholds(val[:_MAX_TUNE], ctx)
            except Cancelled:
                pass  # keep the trained weights and the previous thresholds
        return result

    def _merge_settings(self, settings: TrainSettings) -> None:
        """Take the new training fields; keep what defines the network (fine-tuning)."""
        new = settings.model_dump()
        own = self.settings.model_dump()
        merged = {**own, **{k: v for k, v in new.items() if k in own and k not in ARCHITECTURE}}
        if self.net is None:  # not built yet: nothing to keep but the structure
            merged.update({k: new[k] for k in ARCHITECTURE if k in new and k != "n_classes"})
        self.settings = Settings.model_validate(merged)

    def _check_sample(self, smp: Sample) -> None:
        if smp.target is None:
            raise ValueError(f"sample {smp.source!r} has no labels; the U-Net needs labels to train")
        if smp.image.ndim != self.ndim + 1:
            raise ValueError(f"sample {smp.source!r}: expected a {self.ndim}D item (C, *spatial), "
                             f"got shape {smp.image.shape}")
        if smp.image.shape[0] != self.n_channels:
            raise ValueError(f"sample {smp.source!r} has {smp.image.shape[0]} channel(s), "
                             f"the model takes {self.n_channels}")
        if smp.target.shape != smp.image.shape[1:]:
            raise ValueError(
                f"sample {smp.source!r}: labels shape {smp.target.shape} differs from the image's "
                f"{smp.image.shape[1:]}")
        if smp.mask is not None and smp.mask.shape != smp.target.shape:
            raise ValueError(f"sample {smp.source!r}: mask shape {smp.mask.shape} differs from labels "
                             f"{smp.target.shape}")
        if smp.target.min() < 0:
            raise ValueError(f"sample {smp.source!r}: labels must not be negative")
        check_image(smp.image, f"image {smp.source!r}")

    def _check_classes(self, samples: list[Sample]) -> None:
        if not self.semantic:
            return
        top = max(int(smp.target.max()) for smp in samples)
        if top >= self.n_classes:
            raise ValueError(
                f"the labels use value {top} but this model knows classes 0..{self.n_classes - 1}; "
                "train a new model for more classes")

    def _prepare(self, smp: Sample) -> Sample:
        """Normalised image and class-index target (IGNORE where not valid)."""
        s = self.settings
        x = percentile_normalize(smp.image, s.normalization)
        lab = smp.target
        valid = smp.mask
        if s.mode == "instance":
            y = tg.instance_classes(lab, s.boundary_width)
        elif s.scribbles:
            y = lab.astype(np.int16) - 1
            valid = lab > 0 if valid is None else valid & (lab > 0)
        else:
            y = lab.astype(np.int16)
        y = y.astype(np.int16)
        if valid is not None:
            y[~valid] = tg.IGNORE
        return Sample(x, y, valid, smp.source)

    def _class_weights(self, prepared: list[Sample]) -> np.ndarray:
        k = _n_outputs(self.settings)
        if self.settings.mode == "instance":
            return np.array([1.0, 1.0, self.settings.boundary_weight], np.float32)
        # Semantic: rare classes weigh more (inverse square root of frequency).
        counts = np.zeros(k)
        for p in prepared:
            counts += np.bincount(p.target[p.target >= 0].ravel(), minlength=k)[:k]
        freq = counts / max(counts.sum(), 1)
        wts = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-6)), 0.0)
        return (wts / max(wts[wts > 0].mean(), 1e-6) if (wts > 0).any() else np.ones(k)).astype(np.float32)

    def _patch(self) -> tuple[int, ...]:
        s = self.settings
        m = 2**s.depth
        if self.ndim == 2:
            return (s.patch_size, s.patch_size)
        z = max(m, s.patch_size_z // m * m)
        return (z, s.patch_size, s.patch_size)

    def _val_batches(self, prepared: list[Sample], patch, to_batch) -> list:
        """Fixed validation patches, built once so every epoch is scored on the same data."""
        s = self.settings
        rng = np.random.default_rng(12345)
        per = max(1, s.val_patches // len(prepared))
        parts = [random_patch(p, patch, rng, s.foreground_patches) for p in prepared for _ in range(per)]
        parts = parts[: max(s.val_patches, len(prepared))]
        bs = max(1, s.batch_size)
        return [to_batch(parts[i : i + bs]) for i in range(0, len(parts), bs)]

    # -- prediction -------------------------------------------------------------
    def predict(
        self, item: np.ndarray, settings: PredictSettings | None, ctx: JobContext | None = None
    ) -> dict[str, np.ndarray]:
        import torch

        if self.net is None:
            raise ValueError("this U-Net has not been trained yet")
        if not isinstance(settings, Predict):
            settings = Predict(**(settings.model_dump() if settings is not None else {}))
        ctx = ctx or JobContext()
        item = np.asarray(item)
        if item.ndim != self.ndim + 1:
            raise ValueError(f"this {self.ndim}D U-Net takes items (C, *spatial) with {self.ndim + 1} axes, "
                             f"got shape {item.shape}")
        if item.shape[0] != self.n_channels:
            raise ValueError(f"this U-Net takes {self.n_channels} channel(s), the image has {item.shape[0]}")
        check_image(item)
        x = percentile_normalize(item, self.settings.normalization)
        dev = devices.select_device(settings.device)
        net = _to_device(self.net, dev).eval()
        fmt = _memory_format(net, dev)
        amp = _autocast(dev, self.settings.mixed_precision, net.ndim)
        k = _n_outputs(self.settings)
        flips = settings.test_time_flips

        def fn(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), amp():
                t = torch.from_numpy(np.ascontiguousarray(batch)).to(dev).contiguous(memory_format=fmt)

                def probs(v):
                    return torch.softmax(net(v).float(), 1)

                return averaged(probs, t, "flips" if flips else "none").cpu().numpy()

        tile = settings.tile_size or _auto_tile(x.shape[1:])

        def run(t, b):
            return predict_tiled(fn, x, k, t, settings.tile_overlap, net.multiple, batch_size=b, ctx=ctx)

        try:
            prob = with_oom_retry(run, tile, settings.batch_size)
        finally:
            if dev.type != "cpu":
                self.net = net.to("cpu")
                devices.release(dev)
        if self.semantic:
            labels = np.argmax(prob, 0).astype(np.int32) + (1 if self.settings.scribbles else 0)
        else:
            labels = tg.instances_from_probabilities(prob, *self._thresholds(settings), settings.min_size,
                                                     settings.min_seed_size)
        out = {"labels": labels}
        if settings.probabilities:
            out["probability"] = prob.astype(np.float32, copy=False)
        return out

    def _thresholds(self, settings: Predict) -> tuple[float, float]:
        fg, seed = settings.foreground_threshold, settings.seed_threshold
        return (self.settings.foreground_threshold if fg is None else fg,
                self.settings.seed_threshold if seed is None else seed)

    def tune_thresholds(self, samples: list[Sample], ctx: JobContext | None = None,
                        settings: Predict | None = None) -> dict[str, float]:
        """Choose the foreground/seed thresholds with the best mean AP@0.5 on ``samples``.

        As StarDist does after training: the network's probabilities are computed once,
        only the cheap watershed is repeated over a small grid. The winners are stored
        in the model's settings and used whenever prediction leaves them automatic.
        """
        from ...metrics import match

        ctx = ctx or JobContext()
        base = (settings or Predict()).model_copy(update={"probabilities": True})
        probs, truths = [], []
        for i, smp in enumerate(samples):
            ctx.check()
            ctx.report(i, len(samples), f"tuning thresholds: image {i + 1}/{len(samples)}")
            p = self.predict(smp.image, base, JobContext(should_cancel=lambda: ctx.cancelled))["probability"]
            t = smp.target if smp.mask is None else np.where(smp.mask, smp.target, 0)
            probs.append((p, smp.mask))
            truths.append(t)
            self._tuned_probs[id(smp.image)] = p
        best = (-1.0, self.settings.foreground_threshold, self.settings.seed_threshold)
        grid = [(fg, seed) for fg in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
                for seed in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
        # On ties the values nearest the middle win: they are the least extreme choice.
        for fg, seed in sorted(grid, key=lambda c: abs(c[0] - 0.5) + abs(c[1] - 0.5)):
            aps = []
            for (p, mask), t in zip(probs, truths):
                lab = tg.instances_from_probabilities(p, fg, seed, base.min_size, base.min_seed_size)
                if mask is not None:
                    lab = np.where(mask, lab, 0)
                aps.append(match(t, lab).ap)
            score = float(np.mean(aps))
            if score > best[0] + 1e-9:
                best = (score, fg, seed)
        self.settings = Settings.model_validate(
            {**self.settings.model_dump(), "foreground_threshold": best[1], "seed_threshold": best[2]})
        return {"tuned_ap50": best[0], "foreground_threshold": best[1], "seed_threshold": best[2]}

    def evaluate(self, samples: list[Sample], ctx: JobContext | None = None, raw: list | None = None) -> dict:
        """AP@0.5/F1 (instance) or IoU per class (semantic) on ``samples``."""
        from ...metrics import match
        from ...evaluation import evaluate_predictions

        cache, self._tuned_probs = self._tuned_probs, {}
        if self.semantic:
            return evaluate_predictions(self, samples, ctx)
        settings = Predict()
        fg, seed = self._thresholds(settings)
        aps, f1s = [], []
        for smp in samples:
            p = cache.get(id(smp.image))
            if p is None:
                lab = self.predict(smp.image, settings, ctx)["labels"]
            else:
                lab = tg.instances_from_probabilities(p, fg, seed, settings.min_size, settings.min_seed_size)
            if smp.mask is not None:
                lab = np.where(smp.mask, lab, 0)
            m = match(smp.target, lab)
            aps.append(m.ap)
            f1s.append(m.f1)
        out: dict = {"n_val": len(samples)}
        if aps:
            out["ap50"], out["f1"] = float(np.mean(aps)), float(np.mean(f1s))
        return out

    # -- storage ----------------------------------------------------------------
    def save_weights(self, folder: Path) -> None:
        import torch

        if self.net is None:
            raise ValueError("this U-Net has not been trained yet; nothing to save")
        torch.save(self.net.state_dict(), Path(folder) / WEIGHTS)

    def load_weights(self, folder: Path) -> None:
        import torch

        path = Path(folder) / WEIGHTS
        if not path.is_file():
            raise store.ModelError(f"{folder} has no {WEIGHTS}: the model folder is incomplete")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem to the user
            raise store.ModelError(
                f"{path} is corrupt or does not match the model's settings: {exc}") from exc
        self.net.eval()


def _to_device(net, dev):
    net = net.to(dev)
    return net.to(memory_format=_memory_format(net, dev))


def _memory_format(net, dev):
    """Channels-last for 2D convolutions: markedly faster on CPU (oneDNN) and modern GPUs."""
    import torch

    if net.ndim == 2 and dev.type in ("cpu", "cuda"):
        return torch.channels_last
    return torch.contiguous_format


def _autocast(dev, enabled: bool, ndim: int = 2):
    """A bfloat16 autocast context factory where the hardware runs it fast, else a no-op.

    On CPU only for 2D: bfloat16 3D convolutions there gave NaN gradients in more
    than half of short training runs here (torch 2.11, oneDNN), 2D never did.
    """
    import contextlib

    import torch

    ok = False
    if enabled and dev.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
    elif enabled and dev.type == "cpu" and ndim == 2:
        try:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            ok = False
    if not ok:
        return contextlib.nullcontext
    return lambda: torch.autocast(dev.type, dtype=torch.bfloat16)


def _soft_dice(logits, y):
    """1 - mean soft Dice over classes, on valid pixels only."""
    import torch

    prob = torch.softmax(logits, 1)
    valid = (y >= 0).unsqueeze(1)
    onehot = torch.zeros_like(prob).scatter_(1, y.clamp(min=0).unsqueeze(1), 1.0)
    prob, onehot = prob * valid, onehot * valid
    dims = (0,) + tuple(range(2, prob.ndim))
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()


def _auto_tile(spatial: tuple[int, ...]) -> int | None:
    """Whole-image prediction while it is small; tiles beyond that bound memory."""
    limit = 2048 * 2048 if len(spatial) == 2 else 160**3
    if int(np.prod(spatial)) <= limit:
        return None
    return 1024 if len(spatial) == 2 else 128
