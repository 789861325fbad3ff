"""MNIST / Fashion-MNIST from IDX files into memory as uint8 tensors, split and batched.

Files are looked up in ``dataset.root`` (when set), ``$SNNBENCH_DATA``, the user's data
cache (:func:`cache_dir`), then (Fashion-MNIST) Debian's ``/usr/share/datasets/fashion-mnist``;
each place may hold them directly or in torchvision's ``<Name>/raw/`` layout, gzip'ed or
not. When none has them and ``dataset.download`` is true, they are downloaded from
torchvision's mirrors (checked against its MD5 sums) into ``dataset.root``, or the cache
when ``root`` is null.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import struct
import urllib.error
import urllib.request
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
#: The IDX datasets this module reads (``dataset.name`` of ``snnbench.dataio.datasets.IDXDataset``).
SOURCES = tuple(_TV_FOLDER)
_SYSTEM_DIRS = {"fashion_mnist": ["/usr/share/datasets/fashion-mnist"], "mnist": []}
_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dim; images: 3 dims
DOWNLOAD_TIMEOUT_S = 30.0  # per network operation while downloading

log = logging.getLogger("snnbench")


class DataError(RuntimeError):
    """A dataset file is missing, truncated or corrupt (message names the file and remedy)."""


@dataclass
class Split:
    """Images ``[N, H, W]`` or ``[N, C, H, W]`` uint8 and labels ``[N]`` int64, in memory."""

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


def cache_dir() -> Path:
    """The default data folder: ``$XDG_CACHE_HOME/snnbench``, else ``~/.cache/snnbench``.

    Independent of the working directory, so runs, sweeps, tests and the analysis started
    anywhere share one download.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "snnbench"


def download_dir(name: str, root: str | None) -> Path:
    """Where a download of dataset ``name`` goes: ``<root or cache>/<Name>/raw``."""
    return (Path(root).expanduser() if root else cache_dir()) / _TV_FOLDER[name] / "raw"


def _candidate_dirs(name: str, root: str | None) -> list[Path]:
    bases = [Path(root).expanduser()] if root else []
    env = os.environ.get("SNNBENCH_DATA")
    if env:
        bases.append(Path(env).expanduser())
    bases.append(cache_dir())
    dirs: list[Path] = []
    for base in bases:
        dirs += [base / _TV_FOLDER[name] / "raw", base]
    dirs += [Path(p) for p in _SYSTEM_DIRS[name]]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


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


def _check_name(name: str) -> None:
    if name not in _TV_FOLDER:
        raise DataError(
            f"dataset.name={name!r} is not known; choose one of {', '.join(_TV_FOLDER)}"
        )


def locate(name: str, root: str | None, download: bool) -> dict[str, Path]:
    """Return the four IDX files of dataset ``name``, downloading them if allowed."""
    _check_name(name)
    searched = _candidate_dirs(name, root)
    for folder in searched:
        found = _find_in(folder)
        if found:
            return found
    where = ", ".join(str(p) for p in searched)
    missing = f"{name} files ({FILES['train_images']}[.gz] ...) not found in {where}"
    if not download:
        raise DataError(
            f"{missing}; set dataset.root or SNNBENCH_DATA to a folder holding them "
            "or set dataset.download=true"
        )
    return fetch(name, download_dir(name, root), context=missing)


def _mirrors(name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """torchvision's mirror URLs and ``(file name, md5)`` list for dataset ``name``."""
    import torchvision  # imported lazily: only needed for downloading

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}
    return list(cls[name].mirrors), list(cls[name].resources)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_file(urls: list[str], md5: str, dest: Path) -> None:
    """Download ``dest`` from the first of ``urls`` that serves it with checksum ``md5``.

    Bytes go to a ``.part`` file renamed into place only once complete and verified, so an
    interrupted download never leaves a file that would be read as data.
    """
    part = dest.with_name(f"{dest.name}.part{os.getpid()}")
    errors = []
    for url in urls:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "snnbench"})
            with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                with part.open("wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
            got = _md5(part)
            if got != md5:
                errors.append(f"{url}: checksum {got}, expected {md5} (incomplete or altered)")
                continue
            os.replace(part, dest)
            return
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors.append(f"{url}: {first}")
        finally:
            part.unlink(missing_ok=True)
    more = f"; {len(errors) - 1} other mirror(s) failed too" if len(errors) > 1 else ""
    raise DataError(f"{errors[0]}{more}")


def fetch(
    name: str, target: Path, context: str = "", only: tuple[str, ...] = ()
) -> dict[str, Path]:
    """Download the IDX files of ``name`` that ``target`` lacks (or those in ``only``).

    Files already in ``target`` under their final names were verified when downloaded and
    are kept. Raises :class:`DataError` (one line: what was searched, what failed, the
    remedy) when a file cannot be fetched.
    """
    _check_name(name)
    mirrors, resources = _mirrors(name)
    created = [p for p in (target.parent.parent, target.parent, target) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    try:
        for filename, md5 in resources:
            dest = target / filename
            if dest.is_file() and filename not in only:
                continue
            log.info("downloading %s into %s", filename, target)
            _fetch_file([m + filename for m in mirrors], md5, dest)
    except DataError as exc:
        for folder in reversed(created):  # leave no empty folders behind
            try:
                folder.rmdir()
            except OSError:
                break
        head = f"{context}, and " if context else ""
        raise DataError(
            f"{head}downloading them into {target} failed ({exc}); without internet, put "
            f"{', '.join(f for f, _ in resources)} in {target}, or set SNNBENCH_DATA "
            "(or dataset.root) to a folder holding them"
        ) from None
    found = _find_in(target)
    if not found:  # the mirrors' list names other files than ours
        raise DataError(f"downloaded {name} into {target}, but {FILES} are not all there")
    return found


def _read_all(name: str, files: dict[str, Path], refetch_in: Path | None) -> dict:
    """Read the four files; a damaged one inside ``refetch_in`` is downloaded again once."""
    tensors = {}
    for key, path in files.items():
        try:
            tensors[key] = read_idx(path)
        except DataError:
            if refetch_in is None or path.parent != refetch_in:
                raise
            log.warning("%s is damaged (an interrupted download?); fetching it again", path)
            path.unlink()
            gz = f"{FILES[key]}.gz"
            tensors[key] = read_idx(fetch(name, refetch_in, only=(gz,))[key])
    return tensors


def read_idx_dataset(name: str, root: str | None, download: bool) -> tuple[Split, Split, str]:
    """The full training and test sets of IDX dataset ``name`` (MNIST, Fashion-MNIST) as
    uint8 ``[N, 28, 28]`` images and int64 labels, and the folder they were read from.

    ``root`` None: ``$SNNBENCH_DATA``, then the cache. A damaged file in the download folder
    is fetched again when ``download`` is true.
    """
    files = locate(name, root, download)
    tensors = _read_all(name, files, download_dir(name, root) if download else None)
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
    train = Split(tensors["train_images"], tensors["train_labels"].long())
    test = Split(tensors["test_images"], tensors["test_labels"].long())
    return train, test, str(files["train_images"].parent)


def split_data(
    train: Split,
    test: Split,
    source: str,
    val_size: int = 5000,
    split_seed: int = 0,
    train_subset: int | None = None,
    eval_subset: int | None = None,
) -> DataSplits:
    """Split a seeded validation set of ``val_size`` images off ``train`` (the rest, in
    order, stays training data); ``train_subset`` keeps the first N training images after
    the split, ``eval_subset`` the first N validation and test images."""
    images, labels = train.images, train.labels
    if not 1 <= val_size < len(labels):
        raise DataError(f"dataset.val_size={val_size} must be in [1, {len(labels) - 1}]")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    train = Split(images[train_idx], labels[train_idx])
    val = Split(images[val_idx], labels[val_idx])
    if train_subset is not None:
        train = Split(train.images[:train_subset], train.labels[:train_subset])
    if eval_subset is not None:
        val = Split(val.images[:eval_subset], val.labels[:eval_subset])
        test = Split(test.images[:eval_subset], test.labels[:eval_subset])
    return DataSplits(train, val, test, source=source)


def load(
    name: str = "mnist",
    root: str | None = None,
    download: bool = True,
    val_size: int = 5000,
    split_seed: int = 0,
    train_subset: int | None = None,
    eval_subset: int | None = None,
) -> DataSplits:
    """Load IDX dataset ``name`` into memory and split it (:func:`read_idx_dataset`,
    :func:`split_data`). For any configured dataset use :func:`load_dataset`."""
    train, test, source = read_idx_dataset(name, root, download)
    return split_data(train, test, source, val_size, split_seed, train_subset, eval_subset)


def batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a split into ``(images [B, ...] uint8, labels [B])`` batches.

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
