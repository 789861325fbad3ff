"""Optuna samplers and pruners built from ``hydra.sweeper.sampler`` / ``.pruner``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from snnbench.sweeps.settings import (
    PRUNERS,
    SAMPLERS,
    PrunerConf,
    SamplerConf,
    SweepConfigError,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna


def _conf(cls: type, spec: Mapping[str, Any] | None) -> Any:
    """``spec`` on top of the dataclass defaults (unknown keys are Hydra's to refuse)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dict(spec or {}).items() if k in names})


def build_sampler(spec: Mapping[str, Any] | None, seed: int | None) -> optuna.samplers.BaseSampler:
    """``tpe`` (TPESampler) or ``random`` from ``hydra.sweeper.sampler``, seeded with ``seed``."""
    import optuna

    conf: SamplerConf = _conf(SamplerConf, spec)
    if conf.name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=int(conf.n_startup_trials),
            multivariate=bool(conf.multivariate),
            constant_liar=bool(conf.constant_liar),
        )
    if conf.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SweepConfigError(
        f"hydra.sweeper.sampler.name={conf.name!r} is not allowed; choose one of "
        f"{', '.join(SAMPLERS)}"
    )


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """A pruner from ``hydra.sweeper.pruner`` (``name`` plus that pruner's settings)."""
    import optuna

    conf: PrunerConf = _conf(PrunerConf, spec)
    startup, warmup = int(conf.n_startup_trials), int(conf.n_warmup_steps)
    interval = int(conf.interval_steps)
    if conf.name == "median":
        return optuna.pruners.MedianPruner(startup, warmup, interval)
    if conf.name == "percentile":
        return optuna.pruners.PercentilePruner(float(conf.percentile), startup, warmup, interval)
    if conf.name == "threshold":
        if conf.lower is None and conf.upper is None:
            raise SweepConfigError(
                "hydra.sweeper.pruner.name=threshold needs hydra.sweeper.pruner.lower or .upper"
            )
        return optuna.pruners.ThresholdPruner(
            lower=conf.lower, upper=conf.upper, n_warmup_steps=warmup, interval_steps=interval
        )
    if conf.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=conf.min_resource or "auto",
            reduction_factor=int(conf.reduction_factor),
        )
    if conf.name in ("none", None):
        return optuna.pruners.NopPruner()
    raise SweepConfigError(
        f"hydra.sweeper.pruner.name={conf.name!r} is not allowed; choose one of "
        f"{', '.join(PRUNERS)}"
    )
