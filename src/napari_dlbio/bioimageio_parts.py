"""What a backend hands the bioimage.io exporter: its network and what the zip must say about it.

A backend supplies only what differs (:meth:`ModelBase.bioimageio` returns a
:class:`BioimageioParts`); everything the package format needs (weights in two
formats, test tensors, cover, documentation, the spec's builders, validation with
``bioimageio.core``) is written once, in :mod:`napari_dlbio.bioimageio_export`.
This module imports neither torch nor bioimageio, so the protocol stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Architecture:
    """How bioimage.io rebuilds the network for the state-dict weights.

    Either ``source``: a self-contained Python file (it imports only torch) holding
    ``callable``; or ``import_from``: an importable module of an installed library
    (CAREamics' UNet) holding ``callable``. ``kwargs`` rebuild this model's network.
    """

    callable: str
    kwargs: dict[str, Any]
    source: Path | None = None
    import_from: str | None = None


@dataclass(frozen=True)
class Normalization:
    """The input normalisation the network was trained with (bioimage.io preprocessing).

    ``percentile``: ``low`` -> 0 and ``high`` -> 1 per image (per channel when
    ``per_channel``); ``mean_std``: ``(x - mean) / std`` with the training set's
    statistics (one per channel); ``percentile_mean_std``: the first, then the
    second (CAREamics' models inside our percentile normalisation); ``none``: raw
    intensities. ``output_mean`` / ``output_std`` (restoration): the network's first
    output is ``y * output_std + output_mean`` in the normalised input's units.
    """

    kind: Literal["percentile", "mean_std", "percentile_mean_std", "none"]
    low: float = 1.0
    high: float = 99.8
    per_channel: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    output_mean: tuple[float, ...] = ()
    output_std: tuple[float, ...] = ()


@dataclass(frozen=True)
class Tensor:
    """One output of the network: channel names and how its grid relates to the input's."""

    name: str
    description: str
    channels: tuple[str, ...]
    scale: int | tuple[int, ...] = 1   # spatial size = input size / scale (StarDist's grid), per axis or all
    halo: int = 0       # pixels on each spatial side that a consumer should crop after tiling


@dataclass(frozen=True)
class BioimageioParts:
    """Everything backend-specific in a bioimage.io package of one model.

    ``network``: a torch module in eval mode on the CPU that maps the normalised
    input ``(1, C, *spatial)`` to one tensor per entry of ``outputs`` (a tuple when
    more than one). ``min_shape`` / ``step``: valid spatial input sizes are
    ``min_shape + k * step`` per axis. ``postprocessing``: Markdown saying how the
    outputs become the final result (watershed, StarDist's NMS, ...).
    """

    network: Any
    architecture: Architecture
    normalization: Normalization
    outputs: tuple[Tensor, ...]
    min_shape: tuple[int, ...]
    step: tuple[int, ...]
    method: str                         # one line: what the model does
    postprocessing: str
    citations: tuple[dict, ...] = ()    # {"text": ..., "doi": ...} or {"text": ..., "url": ...}
    tags: tuple[str, ...] = ()
    input_channels: tuple[str, ...] = ()   # default: channel0, channel1, ...
    extra: dict[str, Any] = field(default_factory=dict)   # backend notes kept in the rdf's config
