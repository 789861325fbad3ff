"""The command line: --help (the app's own name, usage, examples, groups), --version, the
job's name (its log file), and the console script's target."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import snnbench
from snnbench.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snnbench", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_names_the_app_shows_usage_examples_then_groups(tmp_path):
    res = _cli("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("snnbench: train, sweep and benchmark spiking neural networks")
    assert "Hydra" not in out.splitlines()[0] and "__main__" not in out
    for example in (
        "snnbench model=ann debug=quick",
        "snnbench -m hparams_search=optuna",
        "python -m analysis multirun --out reports",
        "python -m snnbench.bench",
    ):
        assert example in out
    usage, groups, config = (
        out.index("Usage:"),
        out.index("== Configuration groups =="),
        out.index("== Config =="),
    )
    assert usage < groups < config
    assert "model: ann, conv_ann, conv_snn, single_step, temporal" in out
    assert "dataset: fashion_mnist, mnist" in out and "--config-dir DIR model=mine" in out
    assert "--hydra-help" in out[config:]


def test_version(tmp_path):
    res = _cli("--version", cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"snnbench {snnbench.__version__}\n", "")
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_console_script_is_main():
    (script,) = entry_points(group="console_scripts", name="snnbench")
    assert script.load() is main


def test_run_log_is_named_after_the_app(tmp_path):
    run_dir = tmp_path / "run"
    res = _cli(
        "model=ann",
        "dataset.train_subset=128",
        "dataset.eval_subset=100",
        "trainer.epochs=1",
        "trainer.progress=false",
        "spiking.enabled=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert (run_dir / "snnbench.log").is_file() and not (run_dir / "__main__.log").exists()
    assert (run_dir / "metrics.json").is_file()
