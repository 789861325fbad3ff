"""Hydra sweepers of snnbench: ``hydra/sweeper=snnbench_optuna`` and ``snnbench_grid``."""
