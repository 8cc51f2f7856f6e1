"""A fifth backend in under 80 lines: a 2-layer CNN for semantic segmentation.

It touches no core file: a settings class, a network, targets, a loss and a spec
for the registry (``backends.register(SPEC)``, or an entry point). Training, validation, the time budget, saving, the store,
the CLI's options and the evaluation (IoU per class) come from the core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from napari_dlbio.backends import BackendSpec
from napari_dlbio.config import PredictSettings, TrainSettings
from napari_dlbio.data import Sample
from napari_dlbio.normalize import percentile_normalize
from napari_dlbio.patches import random_patch
from napari_dlbio.recipe import TorchModel


class Settings(TrainSettings):
    architecture = ("width", "n_classes")
    width: int = Field(8, ge=1, le=64, description="Feature channels")
    n_classes: int = Field(2, ge=2, le=16, description="Label values, 0 included")
    patch_size: int = Field(32, ge=8, description="Training patch edge")


class Predict(PredictSettings):
    pass


class ToyModel(TorchModel):
    def __init__(self, settings: Settings, n_channels: int, ndim: int):
        self.settings, self.n_channels, self.ndim = settings, n_channels, ndim
        self.net = self.build_net()

    semantic = True
    n_classes = property(lambda self: self.settings.n_classes)
    new = classmethod(lambda cls, settings, n_channels, ndim: cls(settings, n_channels, ndim))

    @classmethod
    def load(cls, info):
        import torch

        model = cls(cls.settings_from(info), info.n_channels, info.ndim)
        model.net.load_state_dict(torch.load(Path(info.path) / "toy.pt", weights_only=True))
        return model

    def build_net(self):
        from torch import nn

        w = self.settings.width
        return nn.Sequential(nn.Conv2d(self.n_channels, w, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(w, self.settings.n_classes, 3, padding=1))

    def prepare(self, s: Sample) -> Sample:
        return Sample(percentile_normalize(s.image), s.target.astype(np.int64), None, s.source)

    def example(self, s: Sample, rng, augment: bool) -> tuple:
        x, y, _ = random_patch(s, (self.settings.patch_size,) * 2, rng)
        return x, y.astype(np.int64)

    def loss(self, net, batch):
        from torch.nn.functional import cross_entropy

        return cross_entropy(net(batch[0]), batch[1])

    def forward(self, item, settings, ctx):
        import torch

        with torch.no_grad():
            return self.net.cpu()(torch.from_numpy(percentile_normalize(item))[None])[0].numpy()

    def postprocess(self, raw, settings, ctx):
        return {"labels": raw.argmax(0).astype(np.int32)}

    def save_weights(self, folder: Path) -> None:
        import torch

        torch.save(self.net.state_dict(), Path(folder) / "toy.pt")


SPEC = BackendSpec(name="toy", title="Toy CNN", output="labels", Settings=Settings, Predict=Predict, model=ToyModel)
ToyModel.spec = SPEC
