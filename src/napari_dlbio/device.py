"""Where torch runs, and everything that depends on it, in one place.

Choosing the device (CUDA, then Apple MPS, then CPU, unless the user says), the
memory layout convolutions run fastest in, the bfloat16 autocast rule, the
automatic tile size, and moving a network there and giving the memory back.
torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np


def available_devices() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names.insert(0, "cuda")
    if torch.backends.mps.is_available():
        names.insert(0, "mps")
    return names


def select_device(name: str = "auto"):
    """A ``torch.device`` for ``name`` (auto/cpu/cuda/mps); a clear error if unavailable."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    if name == "mps" and "mps" not in available_devices():
        raise RuntimeError("device 'mps' was chosen but Apple MPS is not available; choose 'auto' or 'cpu'")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def _as_device(device):
    import torch

    return device if isinstance(device, torch.device) else select_device(str(device))


def memory_format(ndim: int, device):
    """Channels-last convolutions: markedly faster on CPUs (oneDNN) and recent GPUs; MPS keeps NCHW."""
    import torch

    if _as_device(device).type not in ("cpu", "cuda"):
        return torch.contiguous_format
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def to_device(net, device, ndim: int):
    """``net`` on ``device`` in its fastest memory layout."""
    device = _as_device(device)
    return net.to(device).to(memory_format=memory_format(ndim, device))


@contextlib.contextmanager
def placed(net, device, ndim: int) -> Iterator:
    """``net`` on ``device`` for a job; back on the CPU and the memory given back afterwards."""
    import torch

    device = _as_device(device)
    try:
        yield to_device(net, device, ndim)
    finally:
        net.to("cpu", memory_format=torch.contiguous_format)
        release(device)


def autocast(device, enabled: bool, ndim: int = 2):
    """A bfloat16 autocast context factory where the hardware runs it fast, else a no-op.

    On CPU only for 2D: bfloat16 3D convolutions there gave NaN gradients in more
    than half of short training runs here (torch 2.11, oneDNN), 2D never did.
    """
    import torch

    device = _as_device(device)
    ok = False
    if enabled and device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
    elif enabled and device.type == "cpu" and ndim == 2:
        try:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            ok = False
    if not ok:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def memory_budget(device) -> int:
    """Bytes one prediction may use for activations on ``device``.

    A GPU: half of its free memory. A CPU: a quarter of the RAM, at most 6 GiB,
    so the user's other programs (and napari's own layers) keep room.
    """
    import torch

    device = _as_device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free // 2)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return int(min(ram // 4, 6 * 2**30))


def auto_tile(spatial: Sequence[int], multiple: int, voxel_bytes: float, device) -> int | None:
    """The tile edge for an item of ``spatial`` shape, or None to predict it whole.

    One rule for every network: ``voxel_bytes`` is the network's activation memory
    per input pixel/voxel (it grows with its width); an item fits whole while
    ``voxels * voxel_bytes`` stays within :func:`memory_budget`. Otherwise the
    largest cube/square tile that fits, rounded down to the network's ``multiple``
    (its total down-sampling, and the output grid), and at least 4 multiples.
    """
    budget = memory_budget(device)
    if int(np.prod(spatial)) * voxel_bytes <= budget:
        return None
    edge = int((budget / voxel_bytes) ** (1.0 / len(spatial)))
    edge = min(edge, 1024 if len(spatial) == 2 else 256)
    return max(4 * multiple, edge // multiple * multiple)


def release(device) -> None:
    """Give cached accelerator memory back after a job (no stale references kept)."""
    import gc

    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cpu":
        # Nothing to give back, and a full collection in a napari session holds the
        # GIL for ~0.5-1 s: the window would freeze at the end of every job.
        return
    gc.collect()
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
