"""The StarDist network in torch, layer for layer the one of the official package.

StarDist (Schmidt et al. 2018, Weigert et al. 2020) is a U-Net whose output is
subsampled by ``grid``: the input first passes ``n_conv_per_depth`` convolutions and a
max-pooling per halving of the grid, then the U-Net (max-pooling down, nearest
up-sampling + concatenation up), a 3x3 "features" convolution, and two 1x1 heads:
the object probability (sigmoid) and the ray distances (linear).

Layers sit in a ``ModuleDict`` keyed by the Keras layer names of the official model
(``down_level_0_no_0``, ``middle_0``, ``features``, ``prob``, ...), with ``grid_<i>``
for the unnamed grid convolutions, so converting official weights is a lookup.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Arch:
    """Everything that shapes the network (the official config's ``unet_*`` and friends)."""

    ndim: int
    n_channels: int
    n_rays: int
    grid: tuple[int, ...]
    depth: int = 3
    width: int = 32
    n_conv_per_depth: int = 2
    kernel_size: int = 3
    pool: tuple[int, ...] = (2, 2)
    features: int = 128
    expansion: int = 2

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def grid_steps(self) -> list[tuple[int, ...]]:
        """The pooling factors the official ``_build`` applies before the U-Net."""
        steps, pooled = [], [1] * self.ndim
        while tuple(pooled) != tuple(self.grid):
            step = tuple(2 if g > p else 1 for g, p in zip(self.grid, pooled))
            pooled = [p * s for p, s in zip(pooled, step)]
            steps.append(step)
        return steps

    @property
    def multiple(self) -> tuple[int, ...]:
        """Input sizes must be divisible by this (grid times the U-Net's total pooling)."""
        return tuple(g * p**self.depth for g, p in zip(self.grid, self.pool))


def check_grid(grid: tuple[int, ...]) -> None:
    for g in grid:
        if g < 1 or g & (g - 1):
            raise ValueError(f"grid values must be powers of two (1, 2, 4, ...), got {tuple(grid)}")


class StarDistNet(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        if arch.ndim not in (2, 3):
            raise ValueError(f"StarDist works on 2D or 3D images, not {arch.ndim}D")
        check_grid(arch.grid)
        self.arch = arch
        Conv = nn.Conv2d if arch.ndim == 2 else nn.Conv3d
        k, pad = arch.kernel_size, arch.kernel_size // 2

        def conv(c_in: int, c_out: int) -> nn.Module:
            # Keras 'same' padding with an odd kernel is symmetric k // 2.
            return Conv(c_in, c_out, k, padding=pad)

        layers: dict[str, nn.Module] = {}
        c = arch.n_channels
        i = 0
        for _ in arch.grid_steps:
            for _ in range(arch.n_conv_per_depth):
                layers[f"grid_{i}"] = conv(c, arch.width)
                c, i = arch.width, i + 1
        nf = [int(arch.width * arch.expansion**n) for n in range(arch.depth + 1)]
        skips = []
        for n in range(arch.depth):
            for j in range(arch.n_conv_per_depth):
                layers[f"down_level_{n}_no_{j}"] = conv(c, nf[n])
                c = nf[n]
            skips.append(c)
        for j in range(arch.n_conv_per_depth - 1):
            layers[f"middle_{j}"] = conv(c, nf[arch.depth])
            c = nf[arch.depth]
        layers[f"middle_{arch.n_conv_per_depth}"] = conv(c, nf[max(0, arch.depth - 1)])
        c = nf[max(0, arch.depth - 1)]
        for n in reversed(range(arch.depth)):
            c += skips[n]
            for j in range(arch.n_conv_per_depth - 1):
                layers[f"up_level_{n}_no_{j}"] = conv(c, nf[n])
                c = nf[n]
            layers[f"up_level_{n}_no_{arch.n_conv_per_depth}"] = conv(c, nf[max(0, n - 1)])
            c = nf[max(0, n - 1)]
        if arch.features > 0:
            layers["features"] = conv(c, arch.features)
            c = arch.features
        layers["prob"] = Conv(c, 1, 1)
        layers["dist"] = Conv(c, arch.n_rays, 1)
        self.layers = nn.ModuleDict(layers)
        self._pool = F.max_pool2d if arch.ndim == 2 else F.max_pool3d
        for name, m in self.layers.items():
            # He init keeps the signal's scale through this ReLU net without batch norm
            # (torch's default shrinks it), so short CPU trainings start learning sooner.
            if name not in ("prob", "dist"):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def init_heads(self, prob: float, dist: float) -> None:
        """Start the heads at the data's mean object probability and ray length."""
        with torch.no_grad():
            p = min(max(prob, 1e-3), 1 - 1e-3)
            self.layers["prob"].bias.fill_(float(torch.logit(torch.tensor(p))))
            self.layers["dist"].bias.fill_(dist)

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """(B, C, *spatial) -> (B, 1 + n_rays, *spatial/grid): probability, then distances.

        ``logits=True`` leaves out the sigmoid, for a numerically stable training loss.
        """
        a, L = self.arch, self.layers
        i = 0
        for step in a.grid_steps:
            for _ in range(a.n_conv_per_depth):
                x = F.relu(L[f"grid_{i}"](x))
                i += 1
            x = self._pool(x, step)
        skips = []
        for n in range(a.depth):
            for j in range(a.n_conv_per_depth):
                x = F.relu(L[f"down_level_{n}_no_{j}"](x))
            skips.append(x)
            x = self._pool(x, a.pool)
        for j in range(a.n_conv_per_depth - 1):
            x = F.relu(L[f"middle_{j}"](x))
        x = F.relu(L[f"middle_{a.n_conv_per_depth}"](x))
        for n in reversed(range(a.depth)):
            x = F.interpolate(x, scale_factor=tuple(float(p) for p in a.pool), mode="nearest")
            x = torch.cat([x, skips[n]], 1)
            for j in range(a.n_conv_per_depth - 1):
                x = F.relu(L[f"up_level_{n}_no_{j}"](x))
            # The official last activation is relu too (unet_last_activation).
            x = F.relu(L[f"up_level_{n}_no_{a.n_conv_per_depth}"](x))
        if "features" in L:
            x = F.relu(L["features"](x))
        p = L["prob"](x)
        return torch.cat([p if logits else torch.sigmoid(p), L["dist"](x)], 1)


def stardist_net(**arch) -> StarDistNet:
    """The network from JSON-able architecture fields (bioimage.io rebuilds it from these kwargs)."""
    return StarDistNet(Arch(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}))
