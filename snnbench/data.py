"""MNIST / Fashion-MNIST from IDX files into memory as uint8 tensors, split and batched.

Files are looked up in ``dataset.root``, then ``$SNNBENCH_DATA``, then (Fashion-MNIST)
Debian's ``/usr/share/datasets/fashion-mnist``; each place may hold them directly or in
torchvision's ``<Name>/raw/`` layout, gzip'ed or not. When none has them and
``dataset.download`` is true, torchvision downloads into ``dataset.root``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TV_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_SYSTEM_DIRS = {"fashion_mnist": ["/usr/share/datasets/fashion-mnist"], "mnist": []}
_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dim; images: 3 dims
DOWNLOAD_TIMEOUT_S = 30.0  # per network operation while downloading


class DataError(RuntimeError):
    """A dataset file is missing, truncated or corrupt (message names the file and remedy)."""


@dataclass
class Split:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` int64, kept in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class DataSplits:
    train: Split
    val: Split
    test: Split
    source: str  # the folder the files were read from


def read_idx(path: Path) -> torch.Tensor:
    """Parse one IDX file (gzip'ed or raw) into a uint8 tensor; raise DataError if damaged."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path}: cannot read ({exc}); the file is truncated or corrupt — delete it and "
            "re-download, or point dataset.root / SNNBENCH_DATA at a good copy"
        ) from None
    if len(raw) < 8:
        raise DataError(f"{path}: truncated IDX header; replace the file with a good copy")
    magic, count = struct.unpack(">II", raw[:8])
    ndim = _MAGIC.get(magic)
    if ndim is None:
        raise DataError(f"{path}: not an IDX label/image file (magic {magic}); replace it")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header; replace the file with a good copy")
    dims = [count, *struct.unpack(f">{ndim - 1}I", raw[8 : 4 + 4 * ndim])] if ndim > 1 else [count]
    offset = 4 + 4 * ndim
    expected = 1
    for d in dims:
        expected *= d
    if len(raw) - offset != expected:
        raise DataError(
            f"{path}: expected {expected} data bytes for shape {dims}, found {len(raw) - offset}; "
            "the file is truncated or corrupt — replace it with a good copy"
        )
    data = torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8)
    return data.reshape(dims)


def _candidate_dirs(name: str, root: str) -> list[Path]:
    bases = [Path(root)]
    env = os.environ.get("SNNBENCH_DATA")
    if env:
        bases.append(Path(env))
    dirs: list[Path] = []
    for base in bases:
        dirs += [base / _TV_FOLDER[name] / "raw", base]
    dirs += [Path(p) for p in _SYSTEM_DIRS[name]]
    return dirs


def _find_in(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def locate(name: str, root: str, download: bool) -> dict[str, Path]:
    """Return the four IDX files of dataset ``name``, downloading them if allowed."""
    if name not in _TV_FOLDER:
        raise DataError(
            f"dataset.name={name!r} is not known; choose one of {', '.join(_TV_FOLDER)}"
        )
    searched = _candidate_dirs(name, root)
    for folder in searched:
        found = _find_in(folder)
        if found:
            return found
    if download:
        _download(name, root)
        found = _find_in(Path(root) / _TV_FOLDER[name] / "raw")
        if found:
            return found
    where = ", ".join(str(p) for p in searched)
    hint = "" if download else " or set dataset.download=true"
    raise DataError(
        f"{name} files ({FILES['train_images']}[.gz] ...) not found in {where}; set "
        f"dataset.root or SNNBENCH_DATA to a folder holding them{hint}"
    )


def _download(name: str, root: str) -> None:
    import torchvision  # imported lazily: only needed for downloading

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}
    created = [p for p in (Path(root), Path(root) / _TV_FOLDER[name]) if not p.exists()]
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # an offline machine may hang, not refuse
    try:
        for train in (True, False):
            cls[name](root, train=train, download=True)
    except Exception as exc:  # network errors come in many types
        # leave nothing half-written: remove the folders this attempt created
        if created:
            shutil.rmtree(created[0], ignore_errors=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"downloading {name} into {root} failed ({first}); without internet, set "
            "dataset.root or SNNBENCH_DATA to a folder holding the IDX files"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def load(
    name: str = "mnist",
    root: str = "data",
    download: bool = True,
    val_size: int = 5000,
    split_seed: int = 0,
    train_subset: int | None = None,
    eval_subset: int | None = None,
) -> DataSplits:
    """Load a dataset into memory and split a seeded validation set off the training set.

    ``train_subset`` keeps the first N training images after the split; ``eval_subset`` the
    first N validation and test images.
    """
    files = locate(name, root, download)
    tensors = {key: read_idx(path) for key, path in files.items()}
    for part in ("train", "test"):
        n_img, n_lab = len(tensors[f"{part}_images"]), len(tensors[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{files[part + '_images']}: {n_img} images but {n_lab} labels in "
                f"{files[part + '_labels']}; replace the damaged file"
            )
        images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
        if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
            raise DataError(
                f"{files[part + '_images']}: images of shape {list(images.shape[1:])}, "
                "expected 28 x 28; replace the file with a good copy"
            )
        if labels.dim() != 1 or (len(labels) and int(labels.max()) > 9):
            raise DataError(
                f"{files[part + '_labels']}: labels outside 0..9; replace the file with a good copy"
            )
    images, labels = tensors["train_images"], tensors["train_labels"].long()
    if not 1 <= val_size < len(labels):
        raise DataError(f"dataset.val_size={val_size} must be in [1, {len(labels) - 1}]")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    train = Split(images[train_idx], labels[train_idx])
    val = Split(images[val_idx], labels[val_idx])
    test = Split(tensors["test_images"], tensors["test_labels"].long())
    if train_subset is not None:
        train = Split(train.images[:train_subset], train.labels[:train_subset])
    if eval_subset is not None:
        val = Split(val.images[:eval_subset], val.labels[:eval_subset])
        test = Split(test.images[:eval_subset], test.labels[:eval_subset])
    return DataSplits(train, val, test, source=str(files["train_images"].parent))


def batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a split into ``(images [B, 28, 28] uint8, labels [B])`` batches.

    With a generator the order is shuffled (a permutation per call); the last batch may be
    smaller. Slicing in-memory tensors; no per-image work.
    """
    n = len(split)
    if generator is None:
        return [
            (split.images[i : i + batch_size], split.labels[i : i + batch_size])
            for i in range(0, n, batch_size)
        ]
    order = torch.randperm(n, generator=generator).to(split.images.device)
    return [(split.images[idx], split.labels[idx]) for idx in torch.split(order, batch_size)]
