"""Choose where torch runs: CUDA, then Apple MPS, then CPU, unless the user says."""

from __future__ import annotations


def available_devices() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.insert(0, "mps")
    return names


def select_device(name: str = "auto"):
    """A ``torch.device`` for ``name`` (auto/cpu/cuda/mps); a clear error if unavailable."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    if name == "mps" and "mps" not in available_devices():
        raise RuntimeError("device 'mps' was chosen but Apple MPS is not available; choose 'auto' or 'cpu'")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


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
