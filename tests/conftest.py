"""Shared fixtures: composed configs pointed at a temporary run dir and the offline data."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from snnbench.config import register_configs

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = str(ROOT / "conf")

# Tests read MNIST from the shared offline copy unless the caller points elsewhere.
os.environ.setdefault("SNNBENCH_DATA", str(ROOT.parent / "shared" / "data"))
register_configs()

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
