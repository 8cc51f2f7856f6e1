"""Official StarDist model folders (Keras HDF5) -> our torch network, without TensorFlow.

A folder written by ``stardist.models.StarDist2D/3D`` holds ``config.json``,
``thresholds.json`` and ``weights_best.h5`` (Keras HDF5: one group per layer, datasets
``<layer>/<layer>/kernel`` or, from Keras 2, ``kernel:0``). Named layers map by name onto
:class:`StarDistNet`; the unnamed grid convolutions (``conv2d``, ``conv2d_1``, ...) map in
file order onto ``grid_0``, ``grid_1``, ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...store import ModelError
from .net import Arch

WEIGHT_FILES = ("weights_best.h5", "weights_last.h5")


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder} is not a StarDist model folder: it has no config.json")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} cannot be read: {exc}") from exc


def arch_from_config(cfg: dict[str, Any]) -> Arch:
    """The network of an official config; anything we do not reproduce is refused clearly."""
    if str(cfg.get("backbone", "unet")).lower() != "unet":
        raise ModelError(f"only U-Net StarDist models can be converted, this one is {cfg.get('backbone')!r}")
    if cfg.get("n_classes"):
        raise ModelError("multi-class StarDist models (n_classes) are not supported")
    if cfg.get("unet_batch_norm"):
        raise ModelError("StarDist models with batch norm are not supported")
    for key in ("unet_activation", "unet_last_activation"):
        if cfg.get(key, "relu") != "relu":
            raise ModelError(f"StarDist models with {key}={cfg[key]!r} are not supported (only relu)")
    ndim = int(cfg.get("n_dim", 2))
    kernel = cfg.get("unet_kernel_size", [3] * ndim)
    if len(set(kernel)) != 1 or kernel[0] % 2 == 0:
        raise ModelError(f"only odd, isotropic kernel sizes are supported, not {kernel}")
    return Arch(
        ndim=ndim,
        n_channels=int(cfg.get("n_channel_in", 1)),
        n_rays=int(cfg["n_rays"]),
        grid=tuple(int(g) for g in cfg.get("grid", [1] * ndim)),
        depth=int(cfg.get("unet_n_depth", 3 if ndim == 2 else 2)),
        width=int(cfg.get("unet_n_filter_base", 32)),
        n_conv_per_depth=int(cfg.get("unet_n_conv_per_depth", 2)),
        kernel_size=int(kernel[0]),
        pool=tuple(int(p) for p in cfg.get("unet_pool", [2] * ndim)),
        features=int(cfg.get("net_conv_after_unet", 128)),
        expansion=int(cfg.get("unet_expansion", 2)),
    )


def read_thresholds(folder: Path) -> dict[str, float]:
    path = folder / "thresholds.json"
    if not path.is_file():
        return {}
    try:
        t = json.loads(path.read_text())
        return {"prob": float(t["prob"]), "nms": float(t["nms"])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read: {exc}") from exc


def weights_file(folder: Path, cfg: dict[str, Any]) -> Path:
    names = [cfg.get("train_checkpoint")] if cfg.get("train_checkpoint") else []
    for name in [*names, *WEIGHT_FILES]:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.h5"))
    if found:
        return found[0]
    raise ModelError(f"{folder} has no Keras weights ({', '.join(WEIGHT_FILES)})")


def read_keras_weights(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(layer name, kernel, bias)`` of every layer with weights, in the file's layer order."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ModelError(f"{path} is not a readable HDF5 weight file: {exc}") from exc
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        stored = root.attrs.get("layer_names", list(root.keys()))
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in stored]
        out = []
        for name in names:
            if name not in root:
                continue
            found: dict[str, np.ndarray] = {}

            def visit(key: str, obj: Any, found: dict = found) -> None:
                if isinstance(obj, h5py.Dataset):
                    leaf = key.rsplit("/", 1)[-1].split(":")[0]
                    if leaf in ("kernel", "bias"):
                        found[leaf] = np.asarray(obj, dtype=np.float32)

            root[name].visititems(visit)
            if "kernel" in found:
                if "bias" not in found:
                    raise ModelError(f"layer {name!r} of {path} has no bias; not a StarDist model")
                out.append((name, found["kernel"], found["bias"]))
    return out


def state_dict_from_keras(path: Path, arch: Arch, expected: dict[str, Any]) -> dict[str, Any]:
    """Torch state dict for a :class:`StarDistNet` of ``arch`` (``expected`` = its state dict)."""
    import torch

    layers = read_keras_weights(path)
    ours = {k.split(".")[1] for k in expected if k.startswith("layers.")}
    grid_names = iter(sorted((n for n in ours if n.startswith("grid_")), key=lambda n: int(n.split("_")[1])))
    state: dict[str, Any] = {}
    for name, kernel, bias in layers:
        target = name if name in ours else next(grid_names, None)
        if target is None:
            raise ModelError(
                f"layer {name!r} of {path.name} has no counterpart in a StarDist network of this config")
        # Keras kernels are (*spatial, in, out); torch wants (out, in, *spatial).
        w = np.transpose(kernel, (arch.ndim + 1, arch.ndim, *range(arch.ndim)))
        key = f"layers.{target}"
        for suffix, arr in (("weight", w), ("bias", bias)):
            want = tuple(expected[f"{key}.{suffix}"].shape)
            if tuple(arr.shape) != want:
                raise ModelError(
                    f"layer {name!r} of {path.name} has shape {tuple(arr.shape)} "
                    f"where the config implies {want}"
                )
            state[f"{key}.{suffix}"] = torch.from_numpy(np.ascontiguousarray(arr))
    missing = sorted(set(expected) - set(state))
    if missing:
        more = " ..." if len(missing) > 4 else ""
        raise ModelError(f"{path.name} lacks weights for {', '.join(missing[:4])}{more}")
    return state
