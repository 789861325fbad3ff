"""``hydra/sweeper=snnbench``: one registered sweeper that dispatches on ``search``."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.snnbench_optuna_sweeper.common import die
from hydra_plugins.snnbench_optuna_sweeper.grid import GridSweeper
from hydra_plugins.snnbench_optuna_sweeper.optuna_sweeper import OptunaSweeper


class SnnbenchSweeper(Sweeper):
    """``search: grid`` -> :class:`GridSweeper`, ``search: optuna`` -> :class:`OptunaSweeper`.

    One registered sweeper, so that ``hparams_search=optuna`` can switch a multirun to
    Optuna by setting keys (a config group override in conf/config.yaml's defaults would
    win over one in an ``hparams_search`` config).
    """

    def __init__(self, search: str, max_batch_size: int | None, **optuna_kwargs: Any):
        if search == "grid":
            self.impl: Sweeper = GridSweeper(
                max_batch_size=max_batch_size, params=optuna_kwargs.get("params") or None
            )
        elif search == "optuna":
            self.impl = OptunaSweeper(**optuna_kwargs)
        else:
            die(f"hydra.sweeper.search={search!r} is not allowed; choose grid or optuna", 2)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
