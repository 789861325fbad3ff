"""Neuromorphic data: ``dataset=nmnist``, N-MNIST read with Tonic (PyPI ``tonic``).

N-MNIST (Orchard et al. 2015) is MNIST recorded by an event camera (34 x 34 pixels, two
polarities) making three saccades. Its files are Tonic's layout, ``<base>/NMNIST/Train/<digit>/
*.bin`` and ``.../Test/...``, in N-MNIST's own binary format (40 bits per event: x, y,
polarity and a 23-bit time stamp in µs); each file is read with Tonic's reader
(``tonic.io.read_mnist_file``) and its events are binned with Tonic's
``to_frame_numpy(n_time_bins=T)`` — the recording split into T windows of equal time —
into event counts per (window, polarity, y, x), held in memory as uint8 (counts clipped at
255) like the image datasets.

A sample is ``[T, 2, 34, 34]`` for a spiking model (``time_bins`` = ``model.num_steps``;
the harness feeds it time first, ``[T, B, 2, 34, 34]``: the frames are the code, the
``encoding`` group is not used) and ``[2, 34, 34]`` (all events of the recording in one
frame) for a model without time (``time_bins`` null). The conv models take the frames as
they are; the MLPs flatten each step to 2312 inputs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from snnbench.dataio import data as data_mod
from snnbench.dataio.data import DataError, Split

#: Where a split's files are, under the data folder (Tonic's layout after extraction).
FOLDER = "NMNIST"
SPLITS = {True: "Train", False: "Test"}


def has_tonic() -> bool:
    return importlib.util.find_spec("tonic") is not None


def read_events(path: Path | str) -> np.ndarray:
    """The events of one N-MNIST file, by Tonic's reader: a structured array with fields
    x, y, t (µs), p (0 or 1)."""
    from tonic.datasets import NMNIST as TonicNMNIST
    from tonic.io import read_mnist_file

    return read_mnist_file(str(path), dtype=TonicNMNIST.dtype)


def to_frames(events: np.ndarray, time_bins: int | None) -> np.ndarray:
    """Event counts per frame: ``[T, 2, 34, 34]`` (``time_bins`` = T windows of equal time,
    Tonic's ``to_frame_numpy(n_time_bins=T)``) or ``[2, 34, 34]`` (``None``: one frame of
    all events), uint8 (counts clipped at 255)."""
    from tonic.datasets import NMNIST as TonicNMNIST
    from tonic.functional import to_frame_numpy

    sensor = TonicNMNIST.sensor_size  # (W, H, P)
    bins = time_bins or 1
    if len(events) == 0:
        frames = np.zeros((bins, sensor[2], sensor[1], sensor[0]), dtype=np.int16)
    elif bins == 1:  # every event (to_frame_numpy's time windows leave the last one out)
        frames = np.zeros((1, sensor[2], sensor[1], sensor[0]), dtype=np.int16)
        np.add.at(frames, (0, events["p"].astype(int), events["y"], events["x"]), 1)
    else:
        frames = to_frame_numpy(events, sensor, n_time_bins=bins)
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames if time_bins else frames[0]


def files(folder: Path) -> list[tuple[Path, int]]:
    """``(file, label)`` of every ``<folder>/<digit>/*.bin``, in Tonic's order (sorted)."""
    out = []
    for digit in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = int(digit.name[-1])  # Tonic: the last character of the folder's name
        out += [(f, label) for f in sorted(digit.glob("*.bin"))]
    return out


class NMNIST:
    """``dataset=nmnist``: N-MNIST as event frames (see the module docstring).

    ``root``: the folder holding ``NMNIST/Train`` and ``NMNIST/Test`` (null: ``$SNNBENCH_DATA``,
    then the user's cache); ``download``: when they are in none, let Tonic download and
    extract them into ``root`` (or the cache); ``time_bins``: T (``${model.num_steps}``).
    """

    input_shape = (2, 34, 34)
    num_classes = 10
    #: Samples carry their own time axis (``[T, C, H, W]``): the harness feeds them as they are.
    frames = True

    def __init__(
        self,
        root: str | None = None,
        download: bool = True,
        time_bins: int | None = None,
        name: str = "nmnist",
    ):
        if not has_tonic():
            raise ValueError(
                "dataset=nmnist reads N-MNIST with Tonic, which is not installed: "
                "pip install 'snnbench[neuromorphic]' (or pip install tonic)"
            )
        if time_bins is not None and (isinstance(time_bins, bool) or int(time_bins) < 1):
            raise ValueError(f"dataset.time_bins={time_bins!r}: null or an integer >= 1")
        self.root, self.download, self.name = root, download, name
        self.time_bins = None if time_bins is None else int(time_bins)

    def _bases(self) -> list[Path]:
        if self.root:
            return [Path(self.root).expanduser()]
        env = os.environ.get("SNNBENCH_DATA")
        return [*([Path(env).expanduser()] if env else []), data_mod.cache_dir()]

    def locate(self) -> Path:
        """The ``NMNIST`` folder holding ``Train`` and ``Test``; downloaded by Tonic when
        absent and ``download`` is set; :class:`DataError` (one line) when not found."""
        for base in self._bases():
            folder = base / FOLDER
            if all((folder / s).is_dir() for s in SPLITS.values()):
                return folder
        if not self.download:
            where = ", ".join(str(b / FOLDER) for b in self._bases())
            raise DataError(
                f"N-MNIST not found in {where} (each with Train/<digit>/*.bin and Test/...); "
                "put the extracted files there, set dataset.root, or dataset.download=true"
            )
        base = self._bases()[0]
        existed = (base / FOLDER).exists()
        try:  # Tonic downloads train.zip / test.zip and extracts them into base/NMNIST
            from tonic.datasets import NMNIST as TonicNMNIST

            for train in (True, False):
                TonicNMNIST(save_to=str(base), train=train)
        except Exception as exc:
            if not existed and (base / FOLDER).is_dir() and not any((base / FOLDER).iterdir()):
                (base / FOLDER).rmdir()  # the empty folder Tonic made before it failed
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"N-MNIST is not in {base / FOLDER} and Tonic could not download it ({first}); "
                "put the extracted Train/ and Test/ folders there or set dataset.root"
            ) from None
        return base / FOLDER

    def read_split(self, folder: Path) -> Split:
        """Every file of one split folder as frames, uint8 ``[N, T, 2, 34, 34]`` (or
        ``[N, 2, 34, 34]``), with int64 labels."""
        found = files(folder)
        if not found:
            raise DataError(f"no N-MNIST .bin files in {folder}/<digit>/")
        frames = np.stack([to_frames(read_events(f), self.time_bins) for f, _ in found])
        labels = torch.tensor([label for _, label in found], dtype=torch.int64)
        return Split(torch.from_numpy(frames), labels)

    def load(self) -> tuple[Split, Split, str]:
        folder = self.locate()
        train, test = (self.read_split(folder / SPLITS[t]) for t in (True, False))
        bins = f"{self.time_bins} time bins" if self.time_bins else "one frame"
        return train, test, f"N-MNIST ({folder}, {bins}, read by Tonic)"
