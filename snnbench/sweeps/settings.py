"""The sweeper's keys (``hydra.sweeper.*``) and their defaults, stated once.

The Hydra plugin registers these dataclasses as the sweeper's config schema; the sampler
and pruner factories build from them, so a default written here is the only one.
"""

# NB: no ``from __future__ import annotations``: Hydra's plugin scan and OmegaConf need
# real type objects in these dataclasses.
from dataclasses import dataclass, field

#: ``hydra.sweeper.search`` values.
SEARCHES = ("grid", "optuna")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "threshold", "successive_halving", "none")


class SweepConfigError(ValueError):
    """A sweeper setting is not allowed (the message names the key)."""


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random
    seed: int | None = 1234  # offset by the study's trial count when a sweep opens it
    n_startup_trials: int = 5  # tpe: random trials before the model kicks in
    multivariate: bool = False  # tpe
    constant_liar: bool = True  # tpe: avoid sampling next to trials still running


@dataclass
class PrunerConf:
    name: str = "median"  # median | percentile | threshold | successive_halving | none
    n_startup_trials: int = 3  # median/percentile: finished trials before pruning starts
    n_warmup_steps: int = 1  # epochs a trial runs before it may be pruned
    interval_steps: int = 1
    percentile: float = 25.0  # percentile
    lower: float | None = None  # threshold: prune when val_acc < lower
    upper: float | None = None  # threshold: prune when val_acc > upper
    min_resource: int | None = None  # successive_halving (None = auto)
    reduction_factor: int = 4  # successive_halving


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.snnbench_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    direction: str = "maximize"  # maximize | minimize the task's return (optimized_metric)
    study_name: str = "snnbench"
    # null: SQLite file optuna.db in the sweep dir; or sqlite:///FILE, postgresql://..., a
    # *.db file, journal:FILE (Optuna JournalStorage, for many processes on one machine/NFS)
    storage: str | None = None
    n_trials: int = 20  # trials run by this invocation
    max_trials: int | None = None  # cap on the study's trials (numbers 0..max_trials-1)
    # trials asked for at once = one launcher batch; the batch ends when its slowest trial
    # does (a pruned trial's slot idles until then): for asynchronous parallelism start
    # several sweep processes on one study instead
    n_jobs: int = 1
    max_failure_rate: float = 0.5  # stop when failed trials > rate * n_trials
    max_retries: int = 1  # times a trial lost with its worker/job is re-run (0: never)
    # database storages (SQLite, PostgreSQL): every running trial records a heartbeat each
    # heartbeat_interval s; one silent for grace_period s is failed (and retried) by any
    # sweep process of the study. Journal storages have no heartbeats (same-host check).
    heartbeat_interval: int = 30
    grace_period: int = 120
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: dict[str, str] = field(default_factory=dict)  # search space (override grammar)


@dataclass
class SnnbenchSweeperConf(OptunaSweeperConf):
    """``hydra/sweeper=snnbench`` (conf/config.yaml's default): ``search`` picks the sweep."""

    _target_: str = "hydra_plugins.snnbench_optuna_sweeper.sweeper.SnnbenchSweeper"
    search: str = "grid"  # grid: every combination (Hydra syntax) | optuna: an Optuna study
    max_batch_size: int | None = None  # grid: jobs per launcher batch (None = all)
