"""Datasets are objects: the IDX fast path, the torchvision adapter on the real MNIST files,
a user's torchvision-style dataset from its own folder run from the command line, and
one-line errors for a dataset target that cannot be built."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from snnbench.config import ConfigError
from snnbench.dataio.datasets import IDXDataset, build_dataset, dataset_shape, load_dataset
from snnbench.run.training import run
from tests.conftest import ROOT, TINY


def test_builtin_datasets_are_idx_objects(make_cfg):
    for name in ("mnist", "fashion_mnist"):
        obj = build_dataset(make_cfg(f"dataset={name}").dataset)
        assert isinstance(obj, IDXDataset) and obj.name == name
        assert (obj.input_shape, obj.num_classes) == ((1, 28, 28), 10)


def test_torchvision_adapter_reads_real_mnist_like_the_fast_path(tmp_path, mnist_files, make_cfg):
    """torchvision's own MNIST class (offline, on the unpacked files in its layout) through
    the adapter gives exactly the images, labels and split of the in-memory IDX path."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in mnist_files.values():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(raw / path.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    adapter = {
        "_target_": "snnbench.datasets.TorchvisionDataset",
        "dataset": "torchvision.datasets.MNIST",
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "root": str(tmp_path),
        "download": False,
        "val_size": 5000,
        "split_seed": 3,
        "eval_subset": 500,
    }
    tv = load_dataset(adapter)
    ours = load_dataset(
        make_cfg("dataset.split_seed=3", "dataset.eval_subset=500", tiny=False).dataset
    )
    for a, b in ((tv.train, ours.train), (tv.val, ours.val), (tv.test, ours.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert dataset_shape(adapter) == ((1, 28, 28), 10)


USER_DATASET = '''
"""A torchvision-style dataset: (image, label) items, HWC uint8 colour images, 4 classes."""
import numpy as np


class Stripes:
    def __init__(self, root, train=True, download=False, size=8):
        rng = np.random.default_rng(0 if train else 1)
        n = 300 if train else 100
        self.labels = rng.integers(0, 4, n)
        self.images = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
        for img, label in zip(self.images, self.labels):  # a bright stripe per class
            img[:, 2 * label : 2 * label + 2, label % 3] = 255

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])
'''

USER_YAML = """
defaults:
  - /dataset_schema@_here_
  - _self_
_target_: snnbench.datasets.TorchvisionDataset
dataset: stripes.Stripes
name: stripes
input_shape: [3, 8, 8]
num_classes: 4
val_size: 50
"""


def test_user_dataset_from_its_own_folder_trains_a_conv_snn(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "stripes.py").write_text(textwrap.dedent(USER_DATASET))
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "stripes.yaml").write_text(USER_YAML)
    tiny = [a for a in TINY if not a.startswith("dataset.")]
    proc = subprocess.run(
        [sys.executable, "-m", "snnbench", "--config-dir", str(tmp_path / "conf")]
        + ["dataset=stripes", "model=conv_snn", "model.num_steps=2", "model.channels=[4]"]
        + [
            "model.kernel_size=3",
            "trainer.epochs=3",
            "optimizer.lr=0.01",
            *tiny,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path / 'code'}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    n = {k: record["data"][k] for k in ("n_train", "n_val", "n_test")}
    assert n == {"n_train": 250, "n_val": 50, "n_test": 100}
    assert record["best_val_acc"] > 0.5  # 4 classes: it learned the stripes
    conv = record["spiking"]["layers"][0]
    assert conv["in_features"] == 3 and conv["dense_ops_per_sample"] == 2 * 4 * 6 * 6 * 27


@pytest.mark.parametrize(
    "override,reason",
    [
        ("dataset._target_=nowhere_at_all.Data", "cannot be imported"),
        ("dataset.name=cifar", "could not be built (ValueError: dataset.name='cifar'"),
        ("+dataset.colour=1", "could not be built (TypeError"),
    ],
)
def test_a_dataset_that_cannot_be_built_is_one_line(make_cfg, override, reason):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    msg = str(err.value)
    assert ("dataset." in msg) and "\n" not in msg
    if "_target_" in override or "colour" in override:
        assert msg.startswith("dataset._target_=") and reason in msg
    assert not (Path(cfg.run_dir) / "metrics.json").exists()
