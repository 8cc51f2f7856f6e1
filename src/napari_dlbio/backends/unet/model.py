"""The U-Net model: what the shared training recipe needs from a U-Net, and its prediction.

Two modes. *Instance*: the network predicts background / interior / boundary and
a seeded watershed turns that into one label per nucleus or cell. *Semantic*: one
class per label value; with ``labels_zero="unannotated"`` (scribbles) the value 0
is ignored by the loss and never predicted. Training is :func:`napari_dlbio.recipe.run`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import device as devices
from ... import store
from ...blocks import unet_radius
from ...data import Sample
from ...jobs import Deadline, JobContext
from ...metrics import match
from ...normalize import percentile_normalize
from ...objects import OBJECTS
from ...patches import augment, random_patch
from ...recipe import TorchModel
from ...tiling import predict_tiled, with_oom_retry
from ...tta import averaged
from ..base import BlockNeeds
from . import targets as tg
from .settings import Predict, Settings
from .settings import n_outputs as _n_outputs
from .spec import SPEC

WEIGHTS = "weights.pt"
OBJECT_HALO = 64  # pixels: larger than most nuclei, so objects crossing a block face are whole in the halo
# Threshold pairs tried after training; on ties the values nearest the middle win.
_GRID = sorted(((fg, seed) for fg in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
                for seed in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)), key=lambda c: abs(c[0] - 0.5) + abs(c[1] - 0.5))


class UNetModel(TorchModel):
    spec = SPEC

    def __init__(self, settings: Settings, n_channels: int, ndim: int):
        if ndim not in (2, 3):
            raise ValueError(f"a U-Net is 2D or 3D, not {ndim}D")
        if n_channels < 1:
            raise ValueError(f"a U-Net needs at least one input channel, not {n_channels}")
        self.settings = settings
        self.n_channels = int(n_channels)
        self.ndim = int(ndim)
        self.info = None
        self.net = self.build_net() if _n_outputs(settings) is not None else None
        self._class_w = None  # loss weight per class (numpy), set before each fit
        self._class_w_on = None  # the same as a tensor on the training device

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

    @property
    def semantic(self) -> bool:
        return self.settings.mode == "semantic"

    @property
    def n_classes(self) -> int:
        return 3 if not self.semantic else int(self.settings.n_classes or 0)

    def build_net(self):
        import torch

        from .net import UNet

        s = self.settings
        # Seeded initial weights (same settings, same model) without touching the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            net = UNet(self.ndim, self.n_channels, _n_outputs(s), s.depth, s.base_width, s.batch_norm, s.dropout)
        return net.eval()

    # -- training: what differs from the shared recipe ------------------------------------------
    def adapt(self, samples: list[Sample]) -> None:
        if not self.semantic:
            return
        top = max(int(smp.target.max()) for smp in samples)
        if self.net is None:  # a new semantic model: the number of classes comes from the labels
            self.settings = self.settings.model_copy(update={"n_classes": max(top + 1, 2)})
        elif top >= self.n_classes:
            raise ValueError(f"the labels use value {top} but this model knows classes 0..{self.n_classes - 1}; "
                             "train a new model for more classes")

    def prepare(self, smp: Sample) -> Sample:
        """Normalised image and class-index target (IGNORE where not valid)."""
        s = self.settings
        lab, valid = smp.target, smp.mask
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
        return Sample(percentile_normalize(smp.image, s.normalization), y, valid, smp.source)

    def before_fit(self, prepared: list[Sample], rng) -> None:
        self._class_w, self._class_w_on = self._class_weights(prepared), None

    def _class_weights(self, prepared: list[Sample]) -> np.ndarray:
        s = self.settings
        if s.mode == "instance":
            return np.array([1.0, 1.0, s.boundary_weight], np.float32)
        # Semantic: rare classes weigh more (inverse square root of frequency).
        k = _n_outputs(s)
        counts = np.zeros(k)
        for p in prepared:
            counts += np.bincount(p.target[p.target >= 0].ravel(), minlength=k)[:k]
        freq = counts / max(counts.sum(), 1)
        wts = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-6)), 0.0)
        return (wts / max(wts[wts > 0].mean(), 1e-6) if (wts > 0).any() else np.ones(k)).astype(np.float32)

    def patch(self) -> tuple[int, ...]:
        s = self.settings
        if self.ndim == 2:
            return (s.patch_size, s.patch_size)
        m = 2**s.depth
        return (max(m, s.patch_size_z // m * m), s.patch_size, s.patch_size)

    def example(self, smp: Sample, rng, augment_: bool) -> tuple:
        x, y, m = random_patch(smp, self.patch(), rng, self.settings.foreground_patches)
        if augment_:
            x, y, m = augment(x, y, m, rng)
        y = y.astype(np.int64)
        if m is not None:
            y[~m] = tg.IGNORE
        return x, y

    def loss(self, net, batch):
        import torch

        x, y = batch
        s = self.settings
        dev = x.device
        if self._class_w_on is None or self._class_w_on.device != dev:
            self._class_w_on = torch.as_tensor(self._class_w, device=dev)
        w = self._class_w_on
        with devices.autocast(dev, s.mixed_precision, self.ndim)():
            logits = net(x)
        logits = logits.float()
        loss = torch.nn.functional.cross_entropy(logits, y, weight=w, ignore_index=tg.IGNORE)
        if s.dice_weight > 0:
            loss = loss + s.dice_weight * _soft_dice(logits, y)
        return loss

    def tuning_samples(self, train, val):
        s = self.settings
        return val if s.mode == "instance" and s.tune_thresholds else []

    def tune(self, raw: list, samples: list[Sample], ctx: JobContext, deadline: Deadline) -> dict:
        """The foreground/seed thresholds with the best mean AP@0.5 on the tuning images.

        As StarDist does after training: the network ran once per image (``raw``); only
        the cheap watershed is repeated over the grid, nearest-the-middle pairs first,
        until the grid or the time budget ends. The winners are kept in the settings.
        """
        base = Predict()
        truths = [smp.target if smp.mask is None else np.where(smp.mask, smp.target, 0) for smp in samples]
        best = (-1.0, self.settings.foreground_threshold, self.settings.seed_threshold)
        tried = 0
        for fg, seed in _GRID:
            ctx.check()
            if deadline.passed() and tried:
                break
            aps = []
            for prob, smp, t in zip(raw, samples, truths):
                lab = tg.instances_from_probabilities(prob, fg, seed, base.min_size, base.min_seed_size)
                aps.append(match(t, lab if smp.mask is None else np.where(smp.mask, lab, 0)).ap)
            tried += 1
            if float(np.mean(aps)) > best[0] + 1e-9:
                best = (float(np.mean(aps)), fg, seed)
        chosen = {"foreground_threshold": best[1], "seed_threshold": best[2]}
        self.settings = self.settings.model_copy(update=chosen)
        return {"thresholds": {"tuned_ap50": best[0], **chosen, "pairs_tried": tried}}

    # -- prediction --------------------------------------------------------------------------------
    def block_needs(self, settings: Predict) -> BlockNeeds:
        """Halo: the receptive field, and room for a nucleus-sized object; blocks on the pooling grid."""
        depth = self.settings.depth
        return BlockNeeds(halo=max(unet_radius(depth), OBJECT_HALO), multiple=2**depth)

    def forward(self, item: np.ndarray, settings: Predict, ctx: JobContext) -> np.ndarray:
        """Class probabilities ``(K, *spatial)`` of a checked item."""
        import torch

        if self.net is None:
            raise ValueError("this U-Net has not been trained yet")
        x = percentile_normalize(item, self.settings.normalization)
        dev = devices.select_device(settings.device)
        net = devices.to_device(self.net, dev, self.ndim).eval()
        fmt = devices.memory_format(self.ndim, dev)
        amp = devices.autocast(dev, self.settings.mixed_precision, self.ndim)
        mode = "flips" if settings.test_time_flips else "none"

        def fn(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), amp():
                t = torch.from_numpy(np.ascontiguousarray(batch)).to(dev).contiguous(memory_format=fmt)
                return averaged(lambda v: torch.softmax(net(v).float(), 1), t, mode).cpu().numpy()

        voxel_bytes = 96 * self.settings.base_width  # activations per input pixel, measured roughly
        tile = settings.tile_size or devices.auto_tile(x.shape[1:], net.multiple, voxel_bytes, dev)

        def run(t, b):
            # The receptive radius as margin: tiles stitch into the one-tile output (no seams).
            return predict_tiled(fn, x, _n_outputs(self.settings), t, settings.tile_overlap, net.multiple,
                                 batch_size=b, ctx=ctx, margin=unet_radius(self.settings.depth))

        try:
            return with_oom_retry(run, tile, settings.batch_size)
        finally:
            if dev.type != "cpu":
                self.release()

    def postprocess(self, prob: np.ndarray, settings: Predict, ctx: JobContext) -> dict[str, np.ndarray]:
        if self.semantic:
            labels = np.argmax(prob, 0).astype(np.int32) + (1 if self.settings.scribbles else 0)
        else:
            fg = self.settings.foreground_threshold if settings.foreground_threshold is None \
                else settings.foreground_threshold
            seed = self.settings.seed_threshold if settings.seed_threshold is None else settings.seed_threshold
            labels = tg.instances_from_probabilities(prob, fg, seed, settings.min_size, settings.min_seed_size)
        out = {"labels": labels}
        if not self.semantic:
            out[OBJECTS] = tg.object_scores(labels, prob)
        if settings.probabilities:
            out["probability"] = prob.astype(np.float32, copy=False)
        return out

    def bioimageio(self):
        from .bioimageio import parts

        if self.net is None:
            raise store.ModelError("this U-Net has not been trained yet; nothing to export")
        return parts(self)

    # -- storage -------------------------------------------------------------------------------------
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
            raise store.ModelError(f"{path} is corrupt or does not match the model's settings: {exc}") from exc
        self.net.eval()


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
