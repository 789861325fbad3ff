"""Command line: ``snnbench [group=option ...] [key=value ...]`` (also ``python -m snnbench``).

Composes ``config.yaml`` (:func:`snnbench.config.config_dir`) with the overrides and calls
:func:`snnbench.run.training.run`; ``--version`` prints the version, ``--help`` the usage.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from snnbench import __version__
from snnbench.config import ConfigError, config_dir, register_configs
from snnbench.dataio.data import DataError
from snnbench.maths.engine import tune_cpu_allocator
from snnbench.run import exit_codes
from snnbench.run.checkpoint import CheckpointMismatch
from snnbench.run.credentials import hide_overrides
from snnbench.run.training import TrainingDiverged, run
from snnbench.sweeps.job import optuna_trial_job

CONFIG_DIR = config_dir()

register_configs()


def _discard_empty_run_dir(run_dir: Path) -> None:
    """Remove a run dir that holds only Hydra's own files (the run never started)."""
    if not run_dir.is_dir():
        return
    if all(p.name in (".hydra", "snnbench.log") for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def job(cfg: DictConfig) -> float:
    """Run one job; in a single run, bad input ends with a one-line error and exit code 2,
    a checkpoint that cannot be resumed with exit code 3 (see :mod:`snnbench.run.exit_codes`)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    tune_cpu_allocator()  # keep freed [T, B, N] buffers mapped (no numerical effect)
    try:
        with optuna_trial_job(cfg.get("optuna")) as on_epoch:  # None unless an Optuna trial
            return run(cfg, on_epoch=on_epoch)
    except (ConfigError, DataError) as exc:
        if multirun:
            raise
        _discard_empty_run_dir(Path(cfg.run_dir))
        print(f"snnbench: error: {exc}", file=sys.stderr)
        stale = isinstance(exc, CheckpointMismatch)
        sys.exit(exit_codes.STALE_CHECKPOINT if stale else exit_codes.BAD_INPUT)
    except TrainingDiverged as exc:
        if multirun:
            raise
        print(
            f"snnbench: run failed: {exc} (recorded in {cfg.run_dir}/metrics.json)", file=sys.stderr
        )
        sys.exit(exit_codes.FAILED)


def main() -> None:
    """The ``snnbench`` console script: ``--version``, else the Hydra app."""
    if "--version" in sys.argv[1:]:
        print(f"snnbench {__version__}")
        return
    # passwords in URLs stop here: Hydra, the logs and every file see the masked URL, the
    # jobs find the real one in the environment
    sys.argv[1:] = hide_overrides(sys.argv[1:])
    job()


if __name__ == "__main__":
    main()
