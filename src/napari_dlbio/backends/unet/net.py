"""The U-Net itself: 2D or 3D, configurable depth and width, batch norm, dropout."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _layers(ndim: int):
    if ndim == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d, nn.Dropout2d
    if ndim == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d, nn.Dropout3d
    raise ValueError(f"a U-Net is 2D or 3D, not {ndim}D")


class Block(nn.Sequential):
    """Two 3x3 convolutions, each followed by (batch norm and) ReLU."""

    def __init__(self, ndim: int, c_in: int, c_out: int, batch_norm: bool, dropout: float = 0.0):
        Conv, BN, _, _, Drop = _layers(ndim)
        layers: list[nn.Module] = []
        for i, c in enumerate((c_in, c_out)):
            # Batch norm makes the conv bias redundant.
            layers.append(Conv(c, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(BN(c_out))
            layers.append(nn.ReLU(inplace=True))
            if i == 0 and dropout > 0:
                layers.append(Drop(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; widths double at each of ``depth`` levels.

    Any input size works: the input is padded to a multiple of ``2**depth`` and the
    output cropped back, so callers need not know the network's stride.
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        out_channels: int,
        depth: int = 3,
        base_width: int = 32,
        batch_norm: bool = True,
        dropout: float = 0.0,
        softmax: bool = False,
    ):
        super().__init__()
        # softmax: class probabilities instead of logits (bioimage.io packages, which hold no loss).
        self.softmax = softmax
        Conv, _, Pool, Up, _ = _layers(ndim)
        self.ndim, self.depth = ndim, depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(Block(ndim, c, w, batch_norm))
            c = w
        self.pool = Pool(2)
        # Dropout only in the deepest block, where it regularises most and costs least.
        self.bottom = Block(ndim, c, widths[-1], batch_norm, dropout)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w_hi, w in zip(widths[:0:-1], widths[-2::-1]):
            self.up.append(Up(w_hi, w, 2, stride=2))
            self.dec.append(Block(ndim, 2 * w, w, batch_norm))
        self.head = Conv(widths[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        m = self.multiple
        pad = []
        for s in reversed(spatial):
            pad += [0, (-s) % m]
        padded = any(pad)
        if padded:
            x = F.pad(x, pad, mode="reflect" if min(spatial) > max(pad) else "replicate")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, block, skip in zip(self.up, self.dec, reversed(skips)):
            x = block(torch.cat([up(x), skip], 1))
        x = self.head(x)
        if self.softmax:
            x = torch.softmax(x, 1)
        # Crop only what was padded: a traced network (TorchScript) then holds no size of its own.
        return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)] if padded else x
