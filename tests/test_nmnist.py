"""``dataset=nmnist`` on small files written here in N-MNIST's own binary format (40 bits per
event): Tonic's reader gives back the events, the binning into frames is exact, and the
models train on it end to end; missing files and a T that does not match are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tonic")

from snnbench.config import ConfigError, validate  # noqa: E402
from snnbench.dataio.data import DataError  # noqa: E402
from snnbench.dataio.neuromorphic import read_events, to_frames  # noqa: E402
from snnbench.run.results import METRICS_FILE  # noqa: E402
from snnbench.run.training import run  # noqa: E402


def write_bin(path: Path, events: list[tuple[int, int, int, int]]) -> None:
    """Events ``(x, y, t µs, p)`` in N-MNIST's format: per event 5 bytes, x (8 bits), y (8),
    polarity (1) and time stamp (23), big-endian."""
    out = bytearray()
    for x, y, t, p in events:
        assert 0 <= t < 2**23 and p in (0, 1)
        out += bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))


def test_tonics_reader_gives_back_the_events_written(tmp_path):
    events = [(0, 0, 0, 0), (33, 17, 255, 1), (5, 33, 70_000, 1), (12, 3, 8_388_607, 0)]
    write_bin(tmp_path / "a.bin", events)
    got = read_events(tmp_path / "a.bin")
    assert [(int(e["x"]), int(e["y"]), int(e["t"]), int(e["p"])) for e in got] == events


def test_frames_count_events_per_time_window_polarity_and_pixel():
    ev = np.array(
        [(1, 2, 0, 1), (1, 2, 10, 1), (3, 4, 150, 0), (5, 6, 299, 0), (7, 8, 300, 1)],
        dtype=[("x", int), ("y", int), ("t", int), ("p", int)],
    )
    frames = to_frames(ev, 2)  # windows of (300 - 0) // 2 = 150 µs: [0, 150), [150, 300)
    assert frames.shape == (2, 2, 34, 34) and frames.dtype == np.uint8
    assert frames[0, 1, 2, 1] == 2 and frames[1, 0, 4, 3] == 1 and frames[1, 0, 6, 5] == 1
    assert frames.sum() == 4  # Tonic's windows end before the last time stamp
    one = to_frames(ev, None)  # a model without time: every event in one frame
    assert one.shape == (2, 34, 34) and one.sum() == 5 and one[1, 8, 7] == 1


def _digit_events(label: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """A vertical bar at a column of its own per digit, over 300 ms, both polarities."""
    n = 200
    x = 3 * label + 2 + rng.integers(0, 2, n)
    y = rng.integers(4, 30, n)
    t = np.sort(rng.integers(0, 300_000, n))
    p = rng.integers(0, 2, n)
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(x, y, t, p)]


@pytest.fixture(scope="module")
def nmnist_root(tmp_path_factory) -> Path:
    """``NMNIST/Train`` (12 files per digit) and ``NMNIST/Test`` (4 per digit)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("Train", 12), ("Test", 4)):
        for label in range(10):
            for i in range(n):
                path = root / "NMNIST" / split / str(label) / f"{i:05d}.bin"
                write_bin(path, _digit_events(label, rng))
    return root


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=ann", "trainer.epochs=4"],
        ["model=conv_snn", "model.num_steps=3", "trainer.epochs=2"],
        ["model=temporal", "model.num_steps=2", "optimizer.lr=2e-3", "trainer.epochs=2"],
    ],
    ids=["ann", "conv_snn", "temporal"],
)
def test_models_train_on_nmnist_end_to_end(make_cfg, tmp_path, nmnist_root, overrides):
    cfg = make_cfg(
        "dataset=nmnist", f"dataset.root={nmnist_root}", "dataset.val_size=20",
        "trainer.batch_size=16", *overrides,
    )  # fmt: skip
    run(cfg)
    rec = json.loads((tmp_path / "run" / METRICS_FILE).read_text())
    assert rec["status"] == "completed"
    assert "N-MNIST" in json.dumps(rec["data"])
    assert rec["config"]["dataset"]["time_bins"] == cfg.model.num_steps
    assert "error" not in rec["spiking"] and rec["spiking"]["synops_per_sample"] > 0
    if cfg.model.name == "ann":
        assert rec["test_acc"] >= 0.5  # 10 bars, chance is 0.1


def test_missing_files_and_a_t_that_differs_are_one_line(make_cfg, tmp_path, nmnist_root):
    cfg = make_cfg("dataset=nmnist", f"dataset.root={tmp_path / 'empty'}", "model=ann")
    with pytest.raises(DataError, match="N-MNIST not found in .*empty/NMNIST"):
        run(cfg)
    assert not (tmp_path / "run").exists()  # stopped before the run folder was written
    bad = make_cfg("dataset=nmnist", "model=conv_snn", "dataset.time_bins=4")
    with pytest.raises(ConfigError, match=r"dataset.time_bins=4 is not allowed.*model.num_steps"):
        validate(bad)
