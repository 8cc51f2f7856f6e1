"""Fine-tuning Cellpose-SAM inside the shared training recipe.

Cellpose's ``train.train_seg`` runs its own epochs without a callback: it cannot
report progress per epoch, be cancelled, or keep the best model on validation
data, and it writes files of its own choosing. So the *recipe* is the one every
backend uses (:func:`napari_dlbio.recipe.run`), while *what is learnt* is
Cellpose's, taken from its own building blocks rather than copied:

- targets: ``cellpose.dynamics.labels_to_flows`` (cell probability, Y and X flows);
- augmentation: ``cellpose.transforms.random_rotate_and_resize`` (rotation, zoom,
  flip and a 256-px crop, the flow vectors rotated with the image);
- loss: ``cellpose.train._loss_fn_seg`` (MSE on the scaled flows plus BCE on the
  cell probability), imported so that it follows Cellpose's definition;
- normalisation: ``cellpose.transforms.normalize_img``, as ``eval`` applies it.

The learning-rate schedule is the shared loop's (warm-up and cosine decay)
rather than train_seg's (linear ramp over 10 epochs, then constant and halved).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ... import device as devices
from ...data import Sample
from ...recipe import TorchModel

BSIZE = 256  # Cellpose-SAM's tile: its position embedding is fixed to 32x32 tokens of 8 px


@contextmanager
def numpy_rng(rs: np.random.RandomState) -> Iterator[None]:
    """Run code that draws from numpy's global RNG (Cellpose's augmentation) on our
    own seeded stream, leaving the global state as it was."""
    saved = np.random.get_state()
    np.random.set_state(rs.get_state())
    try:
        yield
    finally:
        rs.set_state(np.random.get_state())
        np.random.set_state(saved)


@dataclass
class Prepared:
    images: list[np.ndarray] = field(default_factory=list)   # (C, Y, X) normalised float32
    flows: list[np.ndarray] = field(default_factory=list)    # (3, Y, X): cell probability, Y flow, X flow
    diameters: list[float] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def _count(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def _within_mask(smp: Sample) -> tuple[np.ndarray, np.ndarray] | None:
    """Image and labels cropped to the valid region's bounding box.

    Cellpose's loss has no "not annotated" value: outside the region (inside the
    box) counts as background, so draw regions that enclose whole objects.
    """
    if smp.mask is None:
        return smp.image, smp.target
    if not smp.mask.any():
        return None
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(smp.mask))
    target = np.where(smp.mask[box], smp.target[box], 0)
    return smp.image[(slice(None), *box)], target


def prepare(samples: list[Sample], norm, device, min_masks: int) -> Prepared:
    from cellpose import dynamics, transforms, utils

    from .inputs import prepare_input

    out = Prepared()
    for smp in samples:
        if smp.target is None:
            raise ValueError(f"sample {smp.source!r} has no labels; Cellpose needs labels to train")
        if smp.image.ndim != 3:
            raise ValueError(
                f"sample {smp.source!r}: Cellpose trains on 2D images (C, Y, X), got shape {smp.image.shape}")
        if smp.target.shape != smp.image.shape[1:]:
            raise ValueError(
                f"sample {smp.source!r}: labels shape {smp.target.shape} differs from the image's "
                f"{smp.image.shape[1:]}")
        pair = _within_mask(smp)
        if pair is None or _count(pair[1]) < max(min_masks, 1 if min_masks else 0):
            out.left_out.append(smp.source)
            continue
        image, labels = pair
        x, params = prepare_input(image, norm)
        if params["normalize"]:
            x = transforms.normalize_img(x, axis=0, **params)
        # labels_to_flows renumbers its input in place: give it a copy.
        flows = dynamics.labels_to_flows([np.array(labels, dtype=np.int32)], device=device)[0]
        out.images.append(np.ascontiguousarray(x, dtype=np.float32))
        out.flows.append(np.ascontiguousarray(flows[1:], dtype=np.float32))
        out.diameters.append(max(5.0, float(utils.diameters(labels)[0])))
    return out


def _crops(items: list[tuple[np.ndarray, np.ndarray]], rs: np.random.RandomState, scale_range: float, device):
    """Cellpose's own augmentation of ``(image, flows)`` items: rotated, zoomed, flipped 256-px crops."""
    from cellpose.transforms import random_rotate_and_resize

    with numpy_rng(rs):
        x, lbl = random_rotate_and_resize([im for im, _ in items], lbls=[fl for _, fl in items],
                                          scale_range=scale_range, bsize=BSIZE, device=device)[:2]
    return x, lbl


class CellposeTraining(TorchModel):
    """The shared recipe's hooks for fine-tuning Cellpose-SAM (mixed into the Cellpose model).

    A prepared item is ``(image, flows)``: the normalised image and Cellpose's flow
    targets. Crops come from Cellpose's augmentation (always rotated and flipped;
    ``augment`` off only turns the random zoom off).
    """

    def prepare_all(self, samples: list[Sample], training: bool) -> list:
        s = self.settings
        data = prepare(samples, s.normalization, devices.select_device(s.device),
                       s.min_train_masks if training else 0)
        if training:
            if not data.images:
                raise ValueError(
                    f"no training image has at least {s.min_train_masks} objects (min_train_masks): "
                    "annotate more objects or lower min_train_masks")
            self._train_stats = {"train_images": len(data.images), "left_out_few_objects": len(data.left_out),
                                 "mean_diameter": float(np.mean(data.diameters))}
        return list(zip(data.images, data.flows))

    def fit_settings(self, settings, prepared: list):
        steps = settings.steps_per_epoch or max(1, math.ceil(len(prepared) / settings.batch_size))
        self._train_stats["steps_per_epoch"] = steps
        return settings.model_copy(update={"steps_per_epoch": steps})

    def before_fit(self, prepared: list, rng) -> None:
        import torch

        self._weights_changed()
        # Cellpose-SAM scales objects to the diameter it learnt: the mean of these labels.
        self.net.diam_labels.data = torch.tensor([self._train_stats["mean_diameter"]])

    def draw_batch(self, prepared: list, n: int, rng: np.random.Generator, augment: bool) -> tuple:
        items = [prepared[int(i)] for i in rng.integers(len(prepared), size=n)]
        rs = np.random.RandomState(int(rng.integers(2**31)))
        return _crops(items, rs, self.settings.scale_range if augment else 0.0, self._device())

    def fixed_batch(self, items, rng: np.random.Generator) -> tuple:
        rs = np.random.RandomState(int(rng.integers(2**31)))
        return _crops(list(items), rs, self.settings.scale_range, self._device())

    def loss(self, net, batch):
        from cellpose.train import _loss_fn_seg

        x, lbl = batch
        return _loss_fn_seg(lbl, net(x)[0], x.device)

    def memory_format(self, device):
        import torch

        return torch.contiguous_format  # a ViT: channels-last buys nothing

    def fit_metrics(self) -> dict:
        self._weights_changed()
        return {"cellpose": dict(self._train_stats)}

    def _device(self):
        return devices.select_device(self.settings.device)
