"""Test-time augmentation: a network's output averaged over flips or rotations.

Shared by the backends that offer it (U-Net flips, Noise2Void's 8 dihedral
transforms) so each inverse transform is written once. Works on torch tensors
``(B, C, *spatial)``; torch is imported by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Mode = Literal["none", "flips", "dihedral"]


def _transforms(ndim: int, mode: Mode) -> list[tuple[Callable, Callable]]:
    import torch

    ident = (lambda t: t, lambda t: t)
    if mode == "none":
        return [ident]
    if mode == "flips":
        # Identity plus one flip per spatial axis: cheap (ndim + 1 passes), and valid in 3D.
        dims = [[d] for d in range(-ndim, 0)]
        return [ident] + [(lambda t, d=d: torch.flip(t, d), lambda t, d=d: torch.flip(t, d)) for d in dims]
    if mode == "dihedral":
        # The 8 symmetries of the YX square: 4 rotations, each with and without a flip.
        out = []
        for k in range(4):
            for flip in (False, True):
                def fwd(t, k=k, flip=flip):
                    t = torch.rot90(t, k, dims=(-2, -1))
                    return torch.flip(t, dims=(-1,)) if flip else t

                def inv(t, k=k, flip=flip):
                    t = torch.flip(t, dims=(-1,)) if flip else t
                    return torch.rot90(t, -k, dims=(-2, -1))

                out.append((fwd, inv))
        return out
    raise ValueError(f"unknown test-time augmentation {mode!r}; use none, flips or dihedral")


def averaged(fn: Callable, x, mode: Mode = "none"):
    """Mean of ``inverse(fn(forward(x)))`` over the transforms of ``mode``."""
    transforms = _transforms(x.ndim - 2, mode)
    acc = None
    for fwd, inv in transforms:
        out = inv(fn(fwd(x)))
        acc = out if acc is None else acc + out
    return acc / len(transforms)
