"""IDX loading from the offline copy, damaged files, splits and batching."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

from snnbench.dataio import data


@pytest.fixture(scope="module")
def mnist() -> data.DataSplits:
    return data.load("mnist", root="nonexistent", download=False)


def test_loads_real_mnist_from_env(mnist):
    assert len(mnist.train) == 55000 and len(mnist.val) == 5000 and len(mnist.test) == 10000
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.images.shape[1:] == (28, 28)
    assert set(mnist.test.labels.unique().tolist()) == set(range(10))
    mean = torch.cat([mnist.train.images, mnist.val.images]).float().mean().item() / 255
    assert mean == pytest.approx(0.1307, abs=2e-4)


def test_split_is_seeded_and_disjoint():
    a = data.load("mnist", root="x", download=False, val_size=100, split_seed=3)
    b = data.load("mnist", root="x", download=False, val_size=100, split_seed=3)
    c = data.load("mnist", root="x", download=False, val_size=100, split_seed=4)
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert len(a.train) + len(a.val) == 60000


def test_subsets():
    s = data.load("mnist", root="x", download=False, train_subset=300, eval_subset=50)
    assert (len(s.train), len(s.val), len(s.test)) == (300, 50, 50)


def _copy_raw(tmp_path: Path, files: dict[str, Path]) -> Path:
    """Copy the four gzip'ed IDX files into ``tmp_path/MNIST/raw``."""
    dst = tmp_path / "MNIST" / "raw"
    dst.mkdir(parents=True)
    for key, f in files.items():
        if f.suffix == ".gz":
            shutil.copy(f, dst / f.name)
        else:
            (dst / f"{data.FILES[key]}.gz").write_bytes(gzip.compress(f.read_bytes()))
    return dst


def test_uncompressed_files_in_root(tmp_path, mnist_files, no_data):
    dst = _copy_raw(tmp_path, mnist_files)
    for f in list(dst.glob("*.gz")):
        (dst / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
        f.unlink()
    s = data.load("mnist", root=str(tmp_path), download=False)
    assert s.source == str(dst) and len(s.test) == 10000


def test_truncated_file_is_named(tmp_path, mnist_files, no_data):
    dst = _copy_raw(tmp_path, mnist_files)
    f = dst / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz.*truncated or corrupt"):
        data.load("mnist", root=str(tmp_path), download=False)


def test_short_payload_is_named(tmp_path, mnist_files, no_data):
    dst = _copy_raw(tmp_path, mnist_files)
    f = dst / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-10]))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: expected 10000"):
        data.load("mnist", root=str(tmp_path), download=False)


@pytest.mark.parametrize("keep", [12, 0])
def test_header_cut_short_is_named(tmp_path, mnist_files, no_data, keep):
    dst = _copy_raw(tmp_path, mnist_files)
    f = dst / "train-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:keep]))
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz: truncated IDX header"):
        data.load("mnist", root=str(tmp_path), download=False)


def test_labels_out_of_range_are_named(tmp_path, mnist_files, no_data):
    dst = _copy_raw(tmp_path, mnist_files)
    f = dst / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[8] = 42
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: labels outside 0..9"):
        data.load("mnist", root=str(tmp_path), download=False)


def test_missing_files_name_places_and_remedy(tmp_path, no_data):
    with pytest.raises(data.DataError, match="not found in .*dataset.download=true"):
        data.load("mnist", root=str(tmp_path), download=False)


def test_batches_cover_split_once(mnist):
    split = data.Split(mnist.test.images[:250], mnist.test.labels[:250])
    plain = data.batches(split, 100)
    assert [len(y) for _, y in plain] == [100, 100, 50]
    shuffled = data.batches(split, 100, torch.Generator().manual_seed(0))
    labels = torch.cat([y for _, y in shuffled])
    assert sorted(labels.tolist()) == sorted(split.labels.tolist())
    assert not torch.equal(labels, split.labels)


def test_resume_accepts_data_found_elsewhere(make_cfg, tmp_path, mnist_files, monkeypatch):
    """Where the same files are found (dataset.root, download) is not part of a run: a run
    interrupted after epoch 1 continues from a copy found under another root, reads its
    data there, and ends where an uninterrupted run ends."""
    from snnbench.run.training import run

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg("model=ann", "trainer.epochs=2"), on_epoch=interrupt)
    elsewhere = _copy_raw(tmp_path / "elsewhere", mnist_files)
    monkeypatch.delenv("SNNBENCH_DATA", raising=False)  # only the new root holds the files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    run(make_cfg("model=ann", "trainer.epochs=2", f"dataset.root={tmp_path / 'elsewhere'}",
                 "dataset.download=true", "trainer.resume=true"))  # fmt: skip
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_at_epoch"] == 1
    assert resumed["data"]["source"] == str(elsewhere)
    monkeypatch.undo()
    run(make_cfg("model=ann", "trainer.epochs=2", run_dir=tmp_path / "straight"))
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    for key in ("best_val_acc", "test_acc", "final_test_acc"):
        assert resumed[key] == straight[key]
