"""The Cellpose model: a Cellpose-SAM network behind the shared protocol (predict, fine-tune, save).

Prediction calls ``CellposeModel.eval`` on each item that :func:`tasks.predict`
hands over, so results are Cellpose's own. A 2D network segments Z stacks in two
ways, chosen by the predict settings (hence :meth:`CellposeModel.item_ndim`):
``do_3D`` (flows from the YX, ZY and ZX planes, one call per volume) or
``stitch_threshold > 0`` (slices one at a time, with progress and cancel between
slices, then Cellpose's own stitching). Fine-tuning lives in :mod:`.finetune`.
"""

from __future__ import annotations

import copy
import logging
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ... import device as devices
from ... import store
from ...blocks import placement
from ...config import TrainSettings
from ...jobs import JobContext
from ...objects import OBJECTS, mean_per_object
from ..base import BlockNeeds
from .finetune import CellposeTraining
from .inputs import prepare_input
from .locate import WEIGHTS, resolve
from .settings import MAX_CHANNELS, Predict, Settings
from .spec import SPEC

DIAMETER = 30.0  # pixels: the object size Cellpose-SAM works at when no diameter is given
log = logging.getLogger(__name__)


def open_cellpose(path: Path, device=None):
    """``cellpose.models.CellposeModel`` for a weight file, float32, on ``device`` (default CPU).

    cpsam and its fine-tunes (ViT-L) load exactly as Cellpose loads them; a file
    with another encoder size is built to its sizes (see :mod:`.net`).
    """
    import torch
    from cellpose import models

    from .net import arch_of, encoder_of, read_state

    device = device or torch.device("cpu")
    try:
        state = read_state(path)
    except Exception as exc:
        raise store.ModelError(f"{path} is not a Cellpose model file (cannot read it: {exc})") from exc
    if not isinstance(state, dict) or "W2" not in state:
        raise store.ModelError(
            f"{path} is not a Cellpose 4 (Cellpose-SAM) model file; models of Cellpose 3 and older "
            "cannot be used by Cellpose 4")
    # Cellpose strips the prefix of weights saved from a DataParallel-wrapped network.
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    arch = None
    if "encoder.cls_token" not in state:  # DINO backbones are left to Cellpose
        try:
            arch = arch_of(state)
        except (KeyError, IndexError) as exc:
            raise store.ModelError(f"{path} is not a Cellpose-SAM model file (no {exc} weights)") from exc
    gpu = device.type in ("cuda", "mps")
    try:
        with encoder_of(arch) if arch is not None else nullcontext():
            cp = models.CellposeModel(gpu=gpu, device=device, pretrained_model=str(path), use_bfloat16=False)
    except (RuntimeError, ValueError, NameError) as exc:
        raise store.ModelError(f"Cellpose cannot load {path}: {exc}") from exc
    # Cellpose loads with strict=False; check that every weight found its place.
    own = set(cp.net.state_dict())
    if own != set(state):
        raise store.ModelError(
            f"{path} does not match the Cellpose-SAM network: {len(own ^ set(state))} weights differ in name")
    return cp


def _object_scores(labels: np.ndarray, cellprob, spatial) -> np.ndarray:
    """Per-object scores indexed by label id: the mean cell probability over the mask.

    Cellpose's cell probability is a logit; its sigmoid averaged over the mask's pixels
    is in [0, 1]: high for a cell the network is sure of, low for a faint or spurious one.
    (The flow error Cellpose thresholds masks with is not kept: it needs the flows of
    the masks recomputed, as costly as the masks themselves on a CPU.)
    """
    logit = np.asarray(cellprob, np.float32).reshape(spatial)
    return mean_per_object(labels, 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30))))


def _same_device(a, b) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


class CellposeModel(CellposeTraining):
    """A Cellpose-SAM network (cpsam, a Cellpose model file or one of ours)."""

    spec = SPEC

    def __init__(self, cp, settings: Settings, n_channels: int = MAX_CHANNELS, name: str = "cellpose",
                 source: Path | None = None, origin: str | None = None):
        self._cp = cp                  # CellposeModel holding the float32 network
        self._net16 = None             # bfloat16 copy for prediction, made when first asked for
        self.origin = origin or name   # what it was opened from: the next fine-tune's start_model
        self.settings = settings
        self.n_channels = int(n_channels)
        self.ndim = 2                  # the network is 2D; Predict settings may make items 3D
        self.info: store.ModelInfo | None = None
        self.name = name
        self.source = source

    @property
    def net(self):
        return self._cp.net

    @property
    def cellpose_model(self):
        """The wrapped ``cellpose.models.CellposeModel`` (float32 network)."""
        return self._cp

    # -- construction ---------------------------------------------------------
    @classmethod
    def new(cls, settings: Settings, n_channels: int, ndim: int) -> CellposeModel:
        """Cellpose cannot train from scratch: a 'new' model starts from ``settings.start_model``."""
        if ndim != 2:
            raise ValueError(
                "Cellpose trains on 2D images: train on annotated 2D slices (ndim=2); the model then "
                "segments Z stacks with do_3D or stitch_threshold")
        if not 1 <= n_channels <= MAX_CHANNELS:
            raise ValueError(f"Cellpose-SAM takes one to three channels, not {n_channels}")
        model = cls.pretrained(settings.start_model)
        model.settings = settings
        model.n_channels = int(n_channels)
        return model

    @classmethod
    def load(cls, info: store.ModelInfo) -> CellposeModel:
        path = Path(info.path) / WEIGHTS
        if not path.is_file():
            raise store.ModelError(f"{info.path} has no Cellpose weights file {WEIGHTS}")
        settings = cls.settings_from(info)
        return cls(open_cellpose(path), settings, info.n_channels, info.name, path, str(info.path))

    @classmethod
    def pretrained(cls, name_or_path: str) -> CellposeModel:
        """``cpsam`` (from Cellpose's models folder, never a silent download offline) or a model file."""
        path = resolve(name_or_path)
        name = path.parent.name if path.name == WEIGHTS else path.name
        settings = Settings(start_model=str(name_or_path))
        return cls(open_cellpose(path), settings, MAX_CHANNELS, name, path, str(name_or_path))

    # -- capabilities -----------------------------------------------------------
    def item_ndim(self, settings) -> int:
        s = self.coerce_predict(settings)
        return 3 if s.do_3D or s.stitch_threshold > 0 else 2

    def accepts_channels(self, n: int) -> bool:
        # Cellpose-SAM reads one to three channels, whatever it was fine-tuned on; which
        # ones is the generic channel choice of tasks.predict (CLI --channels, GUI).
        return 1 <= n <= MAX_CHANNELS

    def normalizations(self, settings) -> tuple:
        # Prediction normalises with the Predict settings' percentiles (not the training ones).
        norm = self.coerce_predict(settings).normalization
        return (norm,) if norm.mode == "percentile" else ()

    def block_needs(self, settings) -> BlockNeeds:
        """Two object diameters (as Cellpose's ``distributed_segmentation`` overlaps its blocks), plus
        one of Cellpose's tiles: a 2D block runs the whole image's tiles that cover its core and
        those two diameters (:mod:`.grid`), which reach up to a tile beyond."""
        return BlockNeeds(halo=self._object_halo(settings) + self._tile_size(), multiple=1)

    def _object_halo(self, settings) -> int:
        return max(64, math.ceil(2 * (self.coerce_predict(settings).diameter or DIAMETER)))

    # -- device and precision --------------------------------------------------
    def _point_cellpose_at(self, device) -> None:
        # eval runs the network where its weights are and the flow dynamics on cp.device
        self._cp.device = device
        self._cp.gpu = device.type in ("cuda", "mps")

    def to(self, device) -> None:
        """Move the float32 network (and Cellpose's idea of its device) to ``device``."""
        self._point_cellpose_at(device)
        if not _same_device(self.net.device, device):
            self._cp.net = self.net.to(device)
            self._net16 = None  # never two copies on an accelerator

    def _weights_changed(self) -> None:
        self._net16 = None

    def _network(self, bfloat16: bool, device):
        """The network to predict with, on ``device``.

        The float32 weights are the master copy (training, saving); bfloat16 runs a
        cast copy, as ``CellposeModel(use_bfloat16=True)`` would, and only that copy
        goes to the accelerator, so casting never rounds the weights we save.
        """
        import torch

        if not bfloat16:
            self.to(device)
            return self.net
        if self._net16 is None:
            net16 = copy.deepcopy(self.net)
            net16.dtype = torch.bfloat16   # CPSAM's setter casts its parameters
            self._net16 = net16.eval()
        if self.net.device.type != "cpu":  # the float32 master waits on the CPU meanwhile
            self._cp.net = self.net.to("cpu")
        if not _same_device(self._net16.device, device):
            self._net16 = self._net16.to(device)
        self._point_cellpose_at(device)
        return self._net16

    # -- prediction ---------------------------------------------------------------
    def check_item(self, item: np.ndarray, settings=None) -> np.ndarray:
        if np.ndim(item) >= 1 and not self.accepts_channels(np.shape(item)[0]):
            raise ValueError(
                f"Cellpose-SAM reads one to three channels but the image gives {np.shape(item)[0]}; "
                "choose up to three channels (e.g. 0,1)")
        return super().check_item(item, settings)

    def forward(self, item: np.ndarray, settings: Predict, ctx: JobContext) -> dict[str, np.ndarray]:
        """Cellpose's own ``eval`` (network, flow dynamics and masks in one call).

        A 2D block of a larger item runs the whole item's tiles instead (:mod:`.grid`).
        """
        s = settings
        x, norm = prepare_input(item, s.normalization)
        kw = dict(
            batch_size=s.batch_size, normalize=norm, diameter=s.diameter, flow_threshold=s.flow_threshold,
            cellprob_threshold=s.cellprob_threshold, min_size=s.min_size,
            max_size_fraction=s.max_size_fraction,
            niter=s.niter, augment=s.augment, tile_overlap=s.tile_overlap,
        )
        cp = self._cp
        master = cp.net
        cp.net = self._network(s.bfloat16, devices.select_device(s.device))
        try:
            # Channels last and contiguous, the layout Cellpose converts every input to.
            xl = np.ascontiguousarray(np.moveaxis(x, 0, -1))
            masks, dp, prob = self._placed(xl, s, kw) or self._eval(xl, s, kw, ctx)
        finally:
            cp.net = master
        spatial = x.shape[1:]
        out = {"labels": np.asarray(masks).reshape(spatial).astype(np.int32, copy=False)}
        out[OBJECTS] = _object_scores(out["labels"], prob, spatial)
        if s.return_flows:
            out["flows"] = np.asarray(dp, np.float32).reshape((-1, *spatial))
            out["cellprob"] = np.asarray(prob, np.float32).reshape(spatial)
        return out

    def _eval(self, xl: np.ndarray, s: Predict, kw: dict, ctx: JobContext):
        """``(masks, flows, cell probability)`` of Cellpose's ``eval`` for one item (channels last)."""
        cp = self._cp
        if self.item_ndim(s) == 2:
            masks, flows, _ = cp.eval(xl, channel_axis=-1, **kw)
        elif s.do_3D:
            masks, flows, _ = cp.eval(xl, channel_axis=-1, z_axis=0, do_3D=True, anisotropy=s.anisotropy,
                                      flow3D_smooth=s.flow3D_smooth, **kw)
        else:
            return self._stitched(xl, s, kw, ctx)
        return masks, flows[1], flows[2]

    def _tile_size(self) -> int:
        return 256 if self._cp.backbone == "sam_vitl" else 384  # as CellposeModel._run_net chooses

    def _placed(self, xl: np.ndarray, s: Predict, kw: dict):
        """A 2D block through the whole item's tiles: ``(masks, flows, cellprob)`` over the block,
        zero outside the region the tiles make exact; None when this is not a block or cannot be
        done exactly (Cellpose's ``eval`` on the block then, approximately): 3D items, ``augment``
        (flipped tiles in a pattern of the whole grid) and a ``diameter`` that resizes the image.
        """
        from cellpose import transforms

        from .grid import BlockTiles, masks_in_item, run_tiles

        where = placement()
        spatial = xl.shape[:-1]
        if where is None or self.item_ndim(s) != 2 or s.augment or s.diameter not in (None, DIAMETER):
            return None
        tiles = BlockTiles.plan(where, spatial, self._tile_size(), s.tile_overlap, self._object_halo(s))
        if tiles is None:
            log.warning("block overlap too small for Cellpose's tiles of the whole image; "
                        "predicting the block on its own (may differ at block borders)")
            return None
        x = transforms.convert_image(xl, channel_axis=-1)  # as eval converts it (YXC, at most 3 channels)
        if kw["normalize"]["normalize"]:
            x = transforms.normalize_img(x, **kw["normalize"])
        y = run_tiles(self._cp.net, tiles.inputs(np.moveaxis(x, -1, 0), where.origin), s.batch_size)
        yf = tiles.average(y)
        masks = masks_in_item(
            yf[-3:-1], yf[-1], tuple(a for a, _ in tiles.region), where.shape, niter=s.niter or 200,
            cellprob_threshold=s.cellprob_threshold, flow_threshold=s.flow_threshold, min_size=s.min_size,
            max_size_fraction=s.max_size_fraction, device=self._cp.device)
        inner = tuple(slice(a - o, b - o) for (a, b), o in zip(tiles.region, where.origin))
        labels = np.zeros(spatial, np.int32)
        dp = np.zeros((2, *spatial), np.float32)
        prob = np.zeros(spatial, np.float32)
        labels[inner], dp[(slice(None), *inner)], prob[inner] = masks, yf[-3:-1], yf[-1]
        return labels, dp, prob

    def _stitched(self, x: np.ndarray, s: Predict, kw: dict, ctx: JobContext):
        """Slice by slice (progress and cancel between slices), then Cellpose's stitching.

        Equivalent to ``eval(stack, stitch_threshold=...)``: the stack is normalised
        as a whole first, slices keep small objects until after stitching.
        """
        from cellpose import transforms, utils

        vol = x  # (Z, Y, X, C), our own copy
        norm = kw["normalize"]
        if norm["normalize"]:
            vol = transforms.normalize_img(vol, **norm)
        kw = {**kw, "normalize": {**norm, "normalize": False}}
        nz = vol.shape[0]
        if nz > 1:
            kw["min_size"] = -1
        masks, dps, probs = [], [], []
        for z in range(nz):
            ctx.check()
            m, flows, _ = self._cp.eval(vol[z], channel_axis=-1, **kw)
            masks.append(np.asarray(m).reshape(vol.shape[1:3]))
            dps.append(flows[1])
            probs.append(flows[2])
            ctx.report(z + 1, nz, f"slice {z + 1}/{nz}")
        labels = np.stack(masks)
        if nz > 1:
            labels = utils.stitch3D(labels, stitch_threshold=s.stitch_threshold)
            labels = utils.fill_holes_and_remove_small_masks(labels, min_size=s.min_size)
        return labels, np.stack(dps, axis=1), np.stack(probs)

    # -- training and saving ------------------------------------------------------
    def train(self, train, val, settings: TrainSettings, ctx: JobContext):
        n = {smp.image.shape[0] for smp in train + val}
        if any(c > MAX_CHANNELS for c in n):
            raise ValueError(f"Cellpose-SAM trains on at most three channels, the images have {max(n)}")
        result = super().train(train, val, settings, ctx)
        # The next fine-tune starts from what this model was opened from.
        self.settings = self.settings.model_copy(update={"start_model": self.origin})
        if n:
            self.n_channels = max(n)
        return result

    def check_sample(self, s) -> None:
        if s.image.ndim != 3:  # say why: the network is 2D, Z stacks are for prediction only
            raise ValueError(f"sample {s.source!r}: Cellpose trains on 2D images (C, Y, X), "
                             f"got shape {s.image.shape}")
        super().check_sample(s)

    def save_weights(self, folder: Path) -> None:
        """A native Cellpose model file (``CellposeModel(pretrained_model=...)`` reads it)."""
        import torch

        state = {k: v.detach().to("cpu", torch.float32) for k, v in self.net.state_dict().items()}
        torch.save(state, str(Path(folder) / WEIGHTS))

    def release(self) -> None:
        """Give the accelerator memory back (the network moves to the CPU)."""
        import torch

        dev = self._cp.device
        self._net16 = None
        self.to(torch.device("cpu"))
        devices.release(dev)


CellposeNet = CellposeModel  # the name of earlier releases
