"""Shared fixtures: composed configs pointed at a temporary run dir; MNIST provisioned once.

Before any test runs, MNIST must be where runs look for it (``$SNNBENCH_DATA``, the user's
cache); if it is in neither, it is downloaded into the cache once. Offline with no copy,
the session stops there with one line saying where to put the files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from snnbench.config import config_dir, register_configs
from snnbench.dataio import data

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = config_dir()

register_configs()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Find MNIST (or download it into the cache) once; stop the session if impossible."""
    try:
        data.locate("mnist", root=None, download=True)
    except data.DataError as exc:
        raise pytest.UsageError(f"snnbench tests need MNIST: {exc}") from None


#: Overrides that make any run tiny: a few hundred images, no progress bar, no download.
TINY = [
    "dataset.train_subset=256",
    "dataset.eval_subset=200",
    "dataset.download=false",
    "trainer.epochs=1",
    "trainer.batch_size=64",
    "trainer.progress=false",
    "trainer.device=cpu",
]


def compose_cfg(overrides: list[str], run_dir: Path | str) -> DictConfig:
    """Compose conf/config.yaml with ``overrides``; ``run_dir`` replaces Hydra's output dir."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[*overrides, f"run_dir={run_dir}"])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, tiny=True, run_dir=None)`` -> composed config in tmp_path."""

    def _make(*overrides: str, tiny: bool = True, run_dir: Path | None = None) -> DictConfig:
        return compose_cfg([*(TINY if tiny else []), *overrides], run_dir or tmp_path / "run")

    return _make


@pytest.fixture(scope="session")
def mnist_files() -> dict[str, Path]:
    """The four MNIST IDX files this session reads (found before any test hides them)."""
    return data.locate("mnist", root=None, download=False)


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No MNIST anywhere: ``$SNNBENCH_DATA`` unset, the cache an empty folder (returned)."""
    monkeypatch.delenv("SNNBENCH_DATA", raising=False)
    cache_home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    return cache_home / "snnbench"


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A run with ``trainer.num_threads`` sets torch's thread count for the whole process;
    restore it so no test computes with another test's count (GEMM results depend on it in
    the last bits)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
