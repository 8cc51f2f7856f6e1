"""Cellpose-SAM networks of any size, built by Cellpose's own ``CPSAM`` class.

Cellpose 4 always builds a ViT-L encoder (305 M parameters): ``CPSAM.__init__``
takes it from segment_anything's model registry (``sam_model_registry["vit_l"]``)
and then adapts it (8-px tokens, 256-px tiles, global attention, readout). A
smaller encoder trains and predicts in seconds on a CPU, which the tests and the
benchmark need. Rather than re-writing ``CPSAM``, :func:`build` swaps that one
registry entry for a smaller SAM image encoder while ``CPSAM`` is constructed:
the module layout, the forward pass and the state-dict keys stay Cellpose's own,
so a small net saves to (and loads from) the same file format as ``cpsam``.

The sizes are read back from a weight file (:func:`arch_of`), so a file written
by this module or by Cellpose itself rebuilds the network it came from.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# SAM's windowed attention blocks have relative position tables for 14x14 windows;
# blocks with global attention have them for the whole 64x64 token grid.
_WINDOW = 14
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Arch:
    """The sizes of a Cellpose-SAM (SAM ViT) encoder."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    global_attn: tuple[int, ...] = (5, 11, 17, 23)
    out_chans: int = 256

    @property
    def is_vit_l(self) -> bool:
        return self == VIT_L


VIT_L = Arch()
# Small enough for CPU tests (2.8 M parameters), same structure as cpsam.
TINY = Arch(embed_dim=192, depth=4, num_heads=3, global_attn=(3,), out_chans=256)
# The smallest useful one (0.11 M parameters, ~0.1 s per 256-px tile on one CPU core): unit tests.
MICRO = Arch(embed_dim=32, depth=1, num_heads=1, global_attn=(0,), out_chans=32)


def arch_of(state: dict) -> Arch:
    """Encoder sizes of a Cellpose-SAM state dict (raises KeyError if it is not one)."""
    embed = int(state["encoder.patch_embed.proj.weight"].shape[0])
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks.")})
    head_dim = int(state["encoder.blocks.0.attn.rel_pos_h"].shape[1])
    glob = tuple(
        i for i in blocks if int(state[f"encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) != 2 * _WINDOW - 1
    )
    return Arch(embed, len(blocks), embed // head_dim, glob, int(state["encoder.neck.0.weight"].shape[0]))


@contextmanager
def encoder_of(arch: Arch):
    """While active, ``cellpose.vit.CPSAM()`` (and so ``CellposeModel``) builds ``arch``.

    Outside this block Cellpose is untouched; a lock keeps two jobs from swapping
    the registry entry at once. ViT-L needs no swap.
    """
    if arch.is_vit_l:
        yield
        return
    from functools import partial
    from types import SimpleNamespace

    import torch
    from segment_anything import sam_model_registry
    from segment_anything.modeling import ImageEncoderViT

    def small_sam(checkpoint=None):
        enc = ImageEncoderViT(
            img_size=1024, patch_size=16, embed_dim=arch.embed_dim, depth=arch.depth,
            num_heads=arch.num_heads, mlp_ratio=4, out_chans=arch.out_chans, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            global_attn_indexes=arch.global_attn, window_size=_WINDOW,
        )
        return SimpleNamespace(image_encoder=enc)

    with _LOCK:
        original = sam_model_registry["vit_l"]
        sam_model_registry["vit_l"] = small_sam
        try:
            yield
        finally:
            sam_model_registry["vit_l"] = original


def build(arch: Arch = TINY, seed: int | None = 0):
    """A randomly initialised ``cellpose.vit.CPSAM`` with the encoder ``arch`` (float32, CPU)."""
    import torch
    from cellpose.vit import CPSAM

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        with encoder_of(arch):
            return CPSAM(dtype=torch.float32)


def write_random_model(path: str | Path, arch: Arch = TINY, seed: int = 0) -> Path:
    """Save a random Cellpose-SAM network as a Cellpose model file (for tests and benchmarks).

    It segments nothing useful until trained; it exists so the plumbing can be
    exercised where the real ``cpsam`` weights (1.2 GB) are not available.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build(arch, seed).save_model(str(path))
    return path


def read_state(path: str | Path) -> dict:
    """The state dict of a Cellpose model file, on the CPU, without building anything."""
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
