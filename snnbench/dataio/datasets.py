"""Datasets are objects named by ``_target_`` in ``conf/dataset/*.yaml``.

The dataset contract: an object with

* ``input_shape``: one sample's shape ``(C, H, W)`` and ``num_classes``, known when it is
  built (before anything is loaded: the model is built from them first);
* ``load() -> (train, test, source)``: the full training and test sets as
  :class:`~snnbench.dataio.data.Split` (uint8 images ``[N, H, W]`` or ``[N, C, H, W]``, int64
  labels in ``0 .. num_classes-1``) and a string saying where they came from.

The harness then holds a seeded validation set out of ``train`` and cuts the subsets
(``val_size``, ``split_seed``, ``train_subset``, ``eval_subset``: the group's own keys; the
others are the object's arguments, and ``name`` is passed when the constructor takes it).
Built in: :class:`IDXDataset` (MNIST, Fashion-MNIST: fast in-memory uint8, offline, cache,
download) and :class:`TorchvisionDataset`, an adapter for any torchvision-style dataset class.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from snnbench.config import ConfigError
from snnbench.dataio import data as data_mod
from snnbench.dataio.data import DataError, DataSplits, Split

#: The ``dataset`` keys the harness reads (the split); the others are the object's arguments.
DATASET_HARNESS_KEYS = ("_target_", "val_size", "split_seed", "train_subset", "eval_subset")
IDX_TARGET = "snnbench.datasets.IDXDataset"


class IDXDataset:
    """MNIST or Fashion-MNIST from their IDX files (see :mod:`snnbench.dataio.data` for where they
    are looked up and downloaded): 28 x 28 grey images, 10 classes."""

    input_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, name: str = "mnist", root: str | None = None, download: bool = True):
        if name not in data_mod.SOURCES:
            raise ValueError(
                f"dataset.name={name!r} is not an IDX dataset; choose one of "
                f"{', '.join(data_mod.SOURCES)}"
            )
        self.name, self.root, self.download = name, root, download

    def load(self) -> tuple[Split, Split, str]:
        return data_mod.read_idx_dataset(self.name, self.root, self.download)


def _uint8_images(data: Any, n: int) -> torch.Tensor:
    """A dataset's ``.data`` (tensor or array, ``[N, H, W]`` or ``[N, H, W, C]``) as uint8
    ``[N, H, W]`` / ``[N, C, H, W]``."""
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if x.dtype != torch.uint8 or x.shape[0] != n:
        raise DataError(f"images of dtype {x.dtype} and shape {list(x.shape)}: expected uint8")
    if x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)  # HWC (CIFAR's layout) -> CHW
    return x.contiguous()


def _to_split(ds: Any) -> Split:
    """A torchvision-style dataset (``.data`` and ``.targets``, or items ``(image, label)``
    with PIL/array/uint8 images) as an in-memory uint8 :class:`Split`."""
    n = len(ds)
    if hasattr(ds, "data") and hasattr(ds, "targets"):
        images = _uint8_images(ds.data, n)
        labels = torch.as_tensor(np.asarray(ds.targets)).long()
    else:
        items = [ds[i] for i in range(n)]
        images = _uint8_images(np.stack([np.asarray(img) for img, _ in items]), n)
        labels = torch.as_tensor([int(label) for _, label in items]).long()
    return Split(images, labels)


class TorchvisionDataset:
    """Adapter for a torchvision-style dataset class: ``cls(root, train=..., download=...,
    **kwargs)`` giving ``(image, label)`` items (or ``.data`` / ``.targets``).

    ``dataset``: the class's import path (e.g. ``torchvision.datasets.KMNIST``);
    ``input_shape`` ``[C, H, W]`` and ``num_classes``: stated in the YAML (checked on load);
    ``root`` null: the user's cache folder (:func:`snnbench.dataio.data.cache_dir`).
    """

    def __init__(
        self,
        dataset: str,
        input_shape: Sequence[int],
        num_classes: int,
        root: str | None = None,
        download: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ):
        from snnbench.targets import _locate

        self.cls = _locate(dataset)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        if len(self.input_shape) != 3 or self.num_classes < 2:
            raise ValueError(
                f"input_shape={list(input_shape)}, num_classes={num_classes}: "
                "need [C, H, W] and at least 2 classes"
            )
        self.root = root or str(data_mod.cache_dir())
        self.download, self.kwargs, self.name = download, kwargs, name or dataset

    def load(self) -> tuple[Split, Split, str]:
        parts = []
        for train in (True, False):
            try:
                ds = self.cls(self.root, train=train, download=self.download, **self.kwargs)
            except (RuntimeError, OSError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise DataError(f"{self.name} in {self.root}: {first}") from None
            split = _to_split(ds)
            shape = tuple(split.images.shape[1:])
            if math.prod(shape) != math.prod(self.input_shape):
                raise DataError(
                    f"{self.name}: samples of shape {list(shape)}, but dataset.input_shape="
                    f"{list(self.input_shape)}; set it to the dataset's"
                )
            if len(split) and int(split.labels.max()) >= self.num_classes:
                raise DataError(
                    f"{self.name}: label {int(split.labels.max())} >= dataset.num_classes="
                    f"{self.num_classes}; set it to the dataset's"
                )
            parts.append(split)
        return parts[0], parts[1], f"{self.name} ({self.root})"


def _target(dataset: DictConfig | dict) -> str:
    """``dataset._target_``; an old record's config (none) is an IDX dataset."""
    return str(dataset.get("_target_") or IDX_TARGET)


def build_dataset(dataset: DictConfig | dict) -> Any:
    """Instantiate the ``dataset`` config (nothing is loaded); :class:`ConfigError` (one line
    naming ``dataset._target_``) when it cannot be imported or built."""
    from hydra.utils import instantiate

    from snnbench.targets import _locate, _one_line

    node = (
        OmegaConf.to_container(dataset, resolve=True)
        if isinstance(dataset, DictConfig)
        else dict(dataset)
    )
    target = _target(node)
    key = f"dataset._target_={target!r}"
    try:
        cls = _locate(target)
    except Exception as exc:
        raise ConfigError(f"{key} cannot be imported ({_one_line(exc)})") from None
    kwargs = {k: v for k, v in node.items() if k not in DATASET_HARNESS_KEYS}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "name" in kwargs and "name" not in params and not takes_any:
        kwargs.pop("name")  # a label only, unless the constructor takes it
    try:
        obj = instantiate({"_target_": target, **kwargs}, _convert_="all")
    except Exception as exc:
        raise ConfigError(f"{key} could not be built ({_one_line(exc)})") from None
    for attr in ("input_shape", "num_classes", "load"):
        if not hasattr(obj, attr):
            raise ConfigError(f"{key} built a {type(obj).__name__} without .{attr}")
    return obj


def gives_frames(dataset: DictConfig | dict) -> bool:
    """Whether the dataset's samples carry their own time axis, ``[T, C, H, W]`` (its class
    says ``frames = True``, as :class:`snnbench.dataio.neuromorphic.NMNIST`): then they are fed to a
    spiking model as they are, time first, instead of through the encoding."""
    from snnbench.targets import _locate

    try:
        return bool(getattr(_locate(_target(dataset)), "frames", False))
    except Exception:  # not importable: build_dataset says why, in one line
        return False


def dataset_shape(dataset: DictConfig | dict) -> tuple[tuple[int, ...], int]:
    """(one sample's shape ``(C, H, W)``, number of classes) of the ``dataset`` config."""
    obj = build_dataset(dataset)
    return tuple(int(d) for d in obj.input_shape), int(obj.num_classes)


def load_dataset(dataset: DictConfig | dict, **changes: Any) -> DataSplits:
    """Build, load and split the ``dataset`` config (``changes`` override its keys, e.g.
    ``download=False``)."""
    node = (
        OmegaConf.to_container(dataset, resolve=True)
        if isinstance(dataset, DictConfig)
        else dict(dataset)
    )
    node.update(changes)
    train, test, source = build_dataset(node).load()
    return data_mod.split_data(
        train,
        test,
        source,
        int(node.get("val_size", 5000)),
        int(node.get("split_seed", 0)),
        node.get("train_subset"),
        node.get("eval_subset"),
    )
