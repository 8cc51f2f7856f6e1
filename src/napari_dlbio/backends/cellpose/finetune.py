"""Fine-tuning Cellpose-SAM inside the shared training loop.

Cellpose's ``train.train_seg`` runs its own epochs without a callback: it cannot
report progress per epoch, be cancelled, or keep the best model on validation
data, and it writes files of its own choosing. So the *loop* is the one every
backend uses (:func:`napari_dlbio.training.fit`), while *what is learnt* is
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
from ...jobs import JobContext
from ...training import FitResult, fit

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


def _crops(data: Prepared, idx, rs: np.random.RandomState, scale_range: float, device):
    from cellpose.transforms import random_rotate_and_resize

    with numpy_rng(rs):
        x, lbl = random_rotate_and_resize(
            [data.images[i] for i in idx], lbls=[data.flows[i] for i in idx],
            scale_range=scale_range, bsize=BSIZE, device=device)[:2]
    return x, lbl


def fine_tune(model, train: list[Sample], val: list[Sample], s, ctx: JobContext) -> FitResult:
    """Train ``model.net`` in place; it holds the best weights (on validation loss) after."""
    import torch
    from cellpose.train import _loss_fn_seg

    dev = devices.select_device(s.device)
    ctx.report(0, 1, "computing Cellpose flows of the training labels")
    tr = prepare(train, s.normalization, dev, s.min_train_masks)
    if not tr.images:
        raise ValueError(
            f"no training image has at least {s.min_train_masks} objects (min_train_masks): "
            "annotate more objects or lower min_train_masks")
    va = prepare(val, s.normalization, dev, 0)
    model.to(dev)
    net = model.net
    net.diam_labels.data = torch.tensor([float(np.mean(tr.diameters))], device=dev)
    torch.manual_seed(s.seed)  # Cellpose-SAM drops random transformer blocks while training
    rs = np.random.RandomState(s.seed)

    def next_batch():
        return _crops(tr, rs.randint(len(tr.images), size=s.batch_size), rs, s.scale_range, dev)

    def loss_fn(batch):
        x, lbl = batch
        return _loss_fn_seg(lbl, net(x)[0], dev)

    val_set = _validation(va, s, dev)
    steps = s.steps_per_epoch or max(1, math.ceil(len(tr.images) / s.batch_size))
    run = s.model_copy(update={"steps_per_epoch": steps})
    try:
        result = fit(net, loss_fn, next_batch, (lambda: val_set) if val_set else None, run, ctx)
    finally:
        val_set = None
        model.release()
    result.metrics["cellpose"] = {
        "train_images": len(tr.images),
        "left_out_few_objects": len(tr.left_out),
        "mean_diameter": float(np.mean(tr.diameters)),
        "steps_per_epoch": steps,
    }
    return result


def _validation(va: Prepared, s, dev) -> list:
    """Fixed augmented crops of the validation images, so every epoch's loss compares alike."""
    if not va.images:
        return []
    rs = np.random.RandomState(s.seed + 1)
    idx = [i for i, im in enumerate(va.images)
           for _ in range(min(4, math.ceil(im.shape[-2] * im.shape[-1] / BSIZE**2)))]
    step = s.batch_size
    return [_crops(va, idx[k:k + step], rs, s.scale_range, dev) for k in range(0, len(idx), step)]
