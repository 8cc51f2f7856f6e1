"""The StarDist model: network, targets and loss for the shared recipe; NMS post-processing.

TensorFlow is never imported: the network is ours (torch), the ``stardist`` package
provides only its framework-free parts (targets, NMS, label rendering, matching).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ... import device as devices
from ...blocks import unet_radius
from ...data import Sample
from ...jobs import JobContext
from ...normalize import percentile_normalize
from ...objects import OBJECTS
from ...recipe import TorchModel
from ...store import ModelError, ModelInfo
from ...tiling import predict_tiled, with_oom_retry
from ..base import BlockNeeds
from .net import Arch, check_grid
from .settings import Predict, Settings
from .spec import SPEC

WEIGHTS = "stardist.pt"
META = "stardist.json"
DEFAULT_THRESHOLDS = {"prob": 0.5, "nms": 0.4}
# Pixels of halo at least: an object crossing a block face must be whole in the neighbour's halo
# (StarDist's predict_instances_big asks the same of its overlap).
OBJECT_HALO = 64


def arch_for(settings: Settings, n_channels: int, ndim: int) -> Arch:
    if ndim not in (2, 3):
        raise ValueError(f"StarDist works on 2D or 3D images, not {ndim}D")
    grid = (settings.grid,) * 2 if ndim == 2 else (settings.grid_z or settings.grid,) + (settings.grid,) * 2
    check_grid(grid)
    return Arch(
        ndim=ndim, n_channels=int(n_channels),
        n_rays=settings.n_rays or (32 if ndim == 2 else 96),
        grid=grid, depth=settings.depth or (3 if ndim == 2 else 2), width=settings.width,
        n_conv_per_depth=settings.n_conv_per_depth, kernel_size=settings.kernel_size,
        pool=(2,) * ndim, features=settings.features,
    )


def settings_for(arch: Arch) -> Settings:
    """Settings describing an existing (e.g. converted) network."""
    g = arch.grid
    if len(set(g[-2:])) != 1:
        raise ModelError(f"StarDist models with different Y/X grid {g} are not supported")
    return Settings(
        n_rays=arch.n_rays, grid=g[-1], grid_z=g[0] if arch.ndim == 3 else None, depth=arch.depth,
        width=arch.width, n_conv_per_depth=arch.n_conv_per_depth,
        kernel_size=arch.kernel_size if arch.kernel_size in (3, 5) else 3, features=arch.features,
    )


class StarDistModel(TorchModel):
    spec = SPEC

    def __init__(self, settings: Settings, arch: Arch, thresholds: dict | None = None,
                 rays: dict | None = None, name: str = "stardist", state: dict | None = None):
        from .net import StarDistNet

        self.settings = settings
        self.arch = arch
        self.ndim = arch.ndim
        self.n_channels = arch.n_channels
        self.info: ModelInfo | None = None
        self.name = name
        self.thresholds = dict(thresholds or DEFAULT_THRESHOLDS)
        import torch

        with torch.random.fork_rng():
            # A new network's initial weights follow the settings' seed: reproducible runs.
            torch.manual_seed(settings.seed)
            self.net = StarDistNet(arch)
        if state is not None:
            self.net.load_state_dict(state)
        self.net.eval()
        self._rays_json = rays
        self._rays = None
        self._trained = state is not None  # loaded or converted weights are never re-initialised
        self._patch: tuple[int, ...] = ()

    @classmethod
    def new(cls, settings: Settings, n_channels: int, ndim: int) -> StarDistModel:
        return cls(settings, arch_for(settings, n_channels, ndim))

    @classmethod
    def load(cls, info: ModelInfo) -> StarDistModel:
        import torch

        folder = Path(info.path)
        meta_path, weights = folder / META, folder / WEIGHTS
        if not meta_path.is_file() or not weights.is_file():
            raise ModelError(f"{folder} lacks {META} or {WEIGHTS}; it is not a complete StarDist model")
        try:
            meta = json.loads(meta_path.read_text())
            arch = Arch(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["arch"].items()})
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelError(f"the StarDist model in {folder} cannot be read: {exc}") from exc
        settings = cls.settings_from(info)
        return cls(settings, arch, meta.get("thresholds"), meta.get("rays"), info.name, state)

    @classmethod
    def pretrained(cls, name_or_path: str) -> StarDistModel:
        """An official StarDist model by name (downloaded once) or a local folder/zip, converted."""
        from . import convert
        from .net import StarDistNet
        from .pretrained import resolve

        folder, name = resolve(str(name_or_path))
        cfg = convert.read_config(folder)
        arch = convert.arch_from_config(cfg)
        state = convert.state_dict_from_keras(convert.weights_file(folder, cfg), arch,
                                              StarDistNet(arch).state_dict())
        thresholds = convert.read_thresholds(folder) or DEFAULT_THRESHOLDS
        model = cls(settings_for(arch), arch, thresholds, cfg.get("rays_json"),
                              f"stardist:{name}", state)
        return model

    # -- helpers --------------------------------------------------------------
    @property
    def rays(self):
        if self.ndim == 2:
            return None
        if self._rays is None:
            from .targets import rays_3d

            self._rays = rays_3d(self.arch.n_rays, self._rays_json)
            self._rays_json = self._rays.to_json()
        return self._rays

    def _normalize(self, item: np.ndarray) -> np.ndarray:
        return percentile_normalize(item, self.settings.normalization)

    def network_output(self, x: np.ndarray, settings: Predict,
                       ctx: JobContext) -> tuple[np.ndarray, np.ndarray]:
        """``(prob (*sub), dist (*sub, R))`` of a normalised item ``x`` (C, *spatial)."""
        import torch

        device = devices.select_device(settings.device)
        net = devices.to_device(self.net, device, self.ndim).eval()
        fmt = devices.memory_format(self.ndim, device)

        def fn(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).contiguous(memory_format=fmt)
                return net(x).float().cpu().numpy()

        tile = settings.tile_size or devices.auto_tile(x.shape[1:], max(self.arch.multiple), 48 * self.arch.width,
                                                       device)

        def run(tile_size, batch_size):
            return predict_tiled(fn, x, 1 + self.arch.n_rays, tile=tile_size, overlap=settings.tile_overlap,
                                 multiple=self.arch.multiple, grid=self.arch.grid, batch_size=batch_size,
                                 ctx=ctx, margin=self._receptive_radius())

        out = with_oom_retry(run, tile, settings.batch_size)
        return out[0], np.moveaxis(out[1:], 0, -1)

    # -- prediction -------------------------------------------------------------
    def _receptive_radius(self) -> tuple[int, ...]:
        """Input pixels each output sees, per axis (the grid stem included)."""
        a = self.arch
        return tuple(unet_radius(a.depth, a.n_conv_per_depth, a.kernel_size, g) + g * a.kernel_size for g in a.grid)

    def block_needs(self, settings: Predict) -> BlockNeeds:
        """Halo: the network's receptive field and room for an object; blocks on the grid x pooling."""
        halo = tuple(max(r, OBJECT_HALO) for r in self._receptive_radius())
        return BlockNeeds(halo=halo, multiple=self.arch.multiple)

    def forward(self, item: np.ndarray, settings: Predict, ctx: JobContext) -> tuple:
        """``(prob, dist, spatial shape)``: the network's output and the shape labels are drawn in."""
        return (*self.network_output(self._normalize(item), settings, ctx), item.shape[1:])

    def postprocess(self, raw, settings: Predict, ctx: JobContext) -> dict[str, Any]:
        from .postprocess import candidates, object_scores, polygons, render

        prob, dist, shape = raw
        pt = settings.prob_thresh if settings.prob_thresh is not None else self.thresholds["prob"]
        nt = settings.nms_thresh if settings.nms_thresh is not None else self.thresholds["nms"]
        ctx.report(0.95, 1.0, "non-maximum suppression")
        points, probi, disti = candidates(prob, dist, self.arch.grid, pt, nt, self.rays)
        labels = render(points, probi, disti, shape, self.rays)
        # Object score: the probability of the kept polygon/polyhedron (ids follow the points).
        out: dict[str, Any] = {"labels": labels, OBJECTS: object_scores(probi)}
        if settings.polygons and self.ndim == 2:
            # Order matches label ids rendered by probability, most probable first.
            out["shapes"] = polygons(points, disti)
        return out

    # -- training: what differs from the shared recipe ------------------------------
    def prepare(self, s: Sample) -> Sample:
        return Sample(self._normalize(s.image), s.target, s.mask, s.source)

    def before_fit(self, prepared: list[Sample], rng) -> None:
        self._patch = self._patch_shape(self.settings, [s.image.shape[1:] for s in prepared])
        if not self._trained:
            # A new network starts from the data's mean probability and ray length.
            _, p, d, v = (torch_tensor(a) for a in self.draw_batch(prepared, 8, rng, False))
            w = p * v
            self.net.init_heads(float(w.sum() / v.sum().clamp_min(1)),
                                float((d * w[:, None]).sum() / (w.sum() * d.shape[1]).clamp_min(1e-6)))
            self._trained = True

    def example(self, s: Sample, rng, augment_: bool) -> tuple:
        from ...patches import augment, random_patch
        from .targets import star_targets

        x, y, m = random_patch(s, self._patch, rng, foreground=self.settings.foreground)
        if augment_:
            x, y, m = augment(x, y, m, rng)
        p, d = star_targets(y, self.arch.n_rays, self.arch.grid, self.rays)
        v = np.ones(p.shape, np.float32) if m is None else m[tuple(slice(0, None, g) for g in self.arch.grid)]
        return x, p, d, v.astype(np.float32)

    def loss(self, net, batch):
        from .loss import stardist_loss

        x, p, d, v = batch
        s = self.settings
        return stardist_loss(net(x, logits=True), p, d, v, s.prob_weight, s.dist_weight, s.background_reg)

    def tuning_samples(self, train, val):
        # Without validation data the training images are better than fixed defaults.
        return (val or train[:8]) if self.settings.optimize_thresholds else []

    def tune(self, raw: list, samples: list[Sample], ctx: JobContext, deadline) -> dict:
        """The probability and NMS thresholds that segment the tuning images best (kept)."""
        from .thresholds import optimize

        trues = [s.target if s.mask is None else np.where(s.mask, s.target, 0) for s in samples]
        best = optimize([(p, d) for p, d, _ in raw], trues, self.arch.grid, self.rays, ctx, deadline=deadline)
        self.thresholds = {"prob": best["prob"], "nms": best["nms"]}
        return {"prob_thresh": best["prob"], "nms_thresh": best["nms"], "threshold_score": best["score"]}

    def fit_metrics(self) -> dict:
        return {"prob_thresh": self.thresholds["prob"], "nms_thresh": self.thresholds["nms"]}

    def bioimageio(self):
        from .bioimageio import parts

        return parts(self)

    @classmethod
    def from_bioimageio(cls, rdf, zip_path: Path, folder: Path) -> StarDistModel:
        from .bioimageio import from_package

        return from_package(cls, rdf, Path(folder))

    def save_weights(self, folder: Path) -> None:
        import torch

        folder = Path(folder)
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, folder / WEIGHTS)
        meta = {"arch": self.arch.as_dict(), "thresholds": self.thresholds,
                "rays": self.rays.to_json() if self.ndim == 3 else None}
        (folder / META).write_text(json.dumps(meta, indent=2))
        # The official file name, so the thresholds are found where StarDist users look.
        (folder / "thresholds.json").write_text(json.dumps(self.thresholds))

    # -- internals ------------------------------------------------------------
    def _patch_shape(self, settings: Settings, shapes) -> tuple[int, ...]:
        yx = settings.patch_size or (128 if self.ndim == 2 else 64)
        want = (yx, yx) if self.ndim == 2 else (settings.patch_size_z or 32, yx, yx)
        biggest = np.max(np.array(shapes), axis=0)
        out = []
        for w, b, m in zip(want, biggest, self.arch.multiple):
            # No bigger than the largest image needs, and divisible by the network's stride.
            size = min(int(w), int(-(-b // m) * m))
            out.append(max(m, size // m * m))
        return tuple(out)


def torch_tensor(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))
