"""The wheel: every config inside the package, the licence and metadata, the entry point.

(CI's wheel step installs it into a second venv and runs it from another folder.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import snnbench

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_configs_license_and_metadata(tmp_path):
    src = tmp_path / "src"  # a clean copy: no stale build/ folder can leak into the wheel
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "docs", "outputs",
            "multirun", "reports", "bench_results", "data", ".*_cache",
        ),
    )  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("snnbench-*.whl")
    assert wheel.name.startswith(f"snnbench-{snnbench.__version__}-py3-none-any")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"snnbench/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert "snnbench/conf/config.yaml" in configs and configs <= names
    assert {n for n in names if n.startswith("snnbench/conf/")} == configs  # nothing stale
    assert "hydra_plugins/snnbench_optuna_sweeper/sweeper.py" in names
    assert "analysis/__main__.py" in names and "analysis/results.ipynb" in names
    info = f"snnbench-{snnbench.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in meta and "Keywords: spiking neural networks" in meta
    assert "Classifier: Topic :: Scientific/Engineering :: Artificial Intelligence" in meta
    entry = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "snnbench = snnbench.__main__:main" in entry
