"""snnbench's Hydra sweeper, ``hydra/sweeper=snnbench`` (the default in conf/config.yaml).

* ``hydra.sweeper.search=grid`` (default): Hydra's basic grid sweep that runs every job
  even when some fail, writes ``<sweep dir>/summary.csv`` after every batch, and ends with
  a one-line message and exit code 1 if a job failed.
* ``hydra.sweeper.search=optuna`` (set by ``hparams_search=optuna``): an Optuna 4/5
  ask/tell sweep with a persistent, shareable study, pruning through the storage, failure
  isolation and a study-wide trial cap. See README "Sweeps".
"""

# NB: no ``from __future__ import annotations``: Hydra's plugin scan and OmegaConf need
# real type objects in the config dataclasses below.
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- configs


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random
    seed: int | None = 1234  # offset by the trial number, so a resumed study never replays
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
    _target_: str = "hydra_plugins.snnbench_optuna_sweeper.sweepers.OptunaSweeper"
    direction: str = "maximize"  # maximize | minimize the task's return (best_val_acc)
    study_name: str = "snnbench"
    # null: SQLite file optuna.db in the sweep dir; or sqlite:///FILE, postgresql://..., a
    # *.db file, journal:FILE (Optuna JournalStorage, for many processes on one machine/NFS)
    storage: str | None = None
    n_trials: int = 20  # trials run by this invocation
    max_trials: int | None = None  # cap on the study's trials (numbers 0..max_trials-1)
    n_jobs: int = 1  # trials in flight at once (one launcher batch)
    max_failure_rate: float = 0.5  # stop when failed trials > rate * n_trials
    retry_dead: bool = True  # re-run trials left RUNNING by a dead sweep process on this host
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: dict[str, str] = field(default_factory=dict)  # search space (override grammar)


@dataclass
class SnnbenchSweeperConf(OptunaSweeperConf):
    """``hydra/sweeper=snnbench`` (conf/config.yaml's default): ``search`` picks the sweep."""

    _target_: str = "hydra_plugins.snnbench_optuna_sweeper.sweepers.SnnbenchSweeper"
    search: str = "grid"  # grid: every combination (Hydra syntax) | optuna: an Optuna study
    max_batch_size: int | None = None  # grid: jobs per launcher batch (None = all)


ConfigStore.instance().store(
    group="hydra/sweeper", name="snnbench", node=SnnbenchSweeperConf, provider="snnbench"
)


def _die(message: str, code: int) -> None:
    """End the sweep with one line on stderr (no traceback) and ``code``."""
    sys.stdout.flush()
    print(f"snnbench: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _output_dir(ret: JobReturn | None) -> str | None:
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)  # type: ignore[union-attr]
    except Exception:
        return None


# ----------------------------------------------------------------------------- grid


class GridSweeper(BasicSweeper):
    """Hydra's grid sweeper, but a failing job never stops the sweep; ``summary.csv``.

    All jobs run (batch after batch, ``max_batch_size`` as in Hydra's basic sweeper);
    ``<sweep dir>/summary.csv`` is rewritten after each batch with one row per job
    (overrides, status, metrics, run dir, error). If any job failed the sweep then ends
    with a one-line message naming them and exit code 1.
    """

    def sweep(self, arguments: list[str]) -> Any:
        from snnbench.sweep import SUMMARY_FILE, summary_row, write_summary

        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(
            parser.parse_overrides(params_conf), self.max_batch_size
        )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        rows: list[dict[str, Any]] = []
        job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            try:
                results: Sequence[JobReturn | None] = self.launcher.launch(
                    batch, initial_job_idx=job_idx
                )
                lost: BaseException | None = None
            except Exception as exc:  # the launcher lost the batch (e.g. a worker died)
                results, lost = [None] * len(batch), exc
            for i, (overrides, ret) in enumerate(zip(batch, results)):
                exc = lost
                if ret is not None and ret.status != JobStatus.COMPLETED:
                    exc = ret._return_value
                rows.append(summary_row(job_idx + i, list(overrides), _output_dir(ret), exc))
            write_summary(sweep_dir / SUMMARY_FILE, rows)
            job_idx += len(batch)
            returns.append([r for r in results if r is not None])

        failed = [r for r in rows if r["status"] != "completed"]
        log.info(
            "%d jobs: %d completed, %d failed; summary: %s",
            len(rows),
            len(rows) - len(failed),
            len(failed),
            sweep_dir / SUMMARY_FILE,
        )
        if failed:
            first = failed[0]
            _die(
                f"{len(failed)} of {len(rows)} jobs failed (first: job {first['job']} "
                f"[{first['overrides']}]: {first['error']}); all jobs ran, see "
                f"{sweep_dir / SUMMARY_FILE}",
                1,
            )
        return returns


# ----------------------------------------------------------------------------- optuna


class _Pruned(Exception):
    """Stands for a job's ``optuna.TrialPruned`` when only its metrics.json is left."""


class OptunaSweeper(Sweeper):
    """Optuna ask/tell sweeper; each trial is one Hydra job (any launcher)."""

    def __init__(
        self,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        max_trials: int | None,
        n_jobs: int,
        max_failure_rate: float,
        retry_dead: bool,
        sampler: Any,
        pruner: Any,
        params: dict[str, str] | None,
    ) -> None:
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.max_trials = max_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.retry_dead = retry_dead
        self.sampler = dict(OmegaConf.to_container(sampler, resolve=True) if sampler else {})
        self.pruner = dict(OmegaConf.to_container(pruner, resolve=True) if pruner else {})
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # -- checks -------------------------------------------------------------------------

    def _check(self) -> None:
        from snnbench.sweep import SweepConfigError, build_pruner, build_sampler

        def bad(key: str, value: Any, allowed: str) -> None:
            raise SweepConfigError(f"hydra.sweeper.{key}={value!r} is not allowed; {allowed}")

        if self.direction not in ("maximize", "minimize"):
            bad("direction", self.direction, "choose maximize or minimize")
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            bad("n_trials", self.n_trials, "it must be an integer >= 1")
        if self.max_trials is not None and self.max_trials < 1:
            bad("max_trials", self.max_trials, "it must be null or an integer >= 1")
        if self.n_jobs < 1:
            bad("n_jobs", self.n_jobs, "it must be an integer >= 1")
        if not 0 <= self.max_failure_rate <= 1:
            bad("max_failure_rate", self.max_failure_rate, "it must be in [0, 1]")
        if not self.study_name:
            bad("study_name", self.study_name, "it must be a non-empty name")
        build_sampler(self.sampler, 0)
        build_pruner(self.pruner)

    def _space(self, arguments: list[str]):
        """(distributions, fixed overrides): ``params`` plus sweeps given on the command line."""
        from snnbench.sweep import search_space

        dists, fixed = search_space(self.params)
        parser = OverridesParser.create()
        last: dict[str, tuple[bool, str]] = {}  # key -> (is a sweep, arg); the last one wins
        for arg in arguments:
            override = parser.parse_overrides([arg])[0]
            key = override.get_key_element()
            last.pop(key, None)  # keep command-line order for the fixed ones
            last[key] = (override.is_sweep_override(), arg)
        cli_sweeps = {k: arg.split("=", 1)[1] for k, (sweep, arg) in last.items() if sweep}
        cli_fixed = [arg for sweep, arg in last.values() if not sweep]
        cli_fixed_keys = {k for k, (sweep, _) in last.items() if not sweep}
        cli_dists, _ = search_space(cli_sweeps)
        dists.update(cli_dists)
        for key in cli_fixed_keys:  # a plain value on the command line fixes a searched key
            dists.pop(key, None)
        fixed = [f for f in fixed if f.split("=", 1)[0] not in dists]
        fixed = [f for f in fixed if f.split("=", 1)[0] not in cli_fixed_keys] + cli_fixed
        if not dists:
            from snnbench.sweep import SweepConfigError

            raise SweepConfigError(
                "hydra.sweeper.params is empty: nothing to search (use hparams_search=optuna "
                "or give e.g. 'neuron.beta=interval(0.5, 0.99)')"
            )
        return dists, fixed

    # -- the study ----------------------------------------------------------------------

    def _fail_dead_trials(self, study: Any) -> None:
        """Trials left RUNNING by a sweep process of this host that has died: mark them
        FAIL (error says why) and, with ``retry_dead``, enqueue their params once so the
        point is still evaluated. Running trials of live or remote workers are left alone."""
        import optuna
        from optuna.trial import TrialState

        from snnbench.sweep import ATTR_ERROR, ATTR_RETRY_OF, ATTR_WORKER, worker_alive

        storage = study._storage
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.system_attrs.get(ATTR_WORKER)
            alive = worker_alive(worker) if worker else None
            if alive is not False:
                if alive is None:
                    log.warning(
                        "trial %d is RUNNING on worker %s (elsewhere or unknown); left alone",
                        t.number,
                        worker,
                    )
                continue
            try:
                storage.set_trial_user_attr(
                    t._trial_id, ATTR_ERROR, f"the sweep process running it ({worker}) died"
                )
                if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    continue
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                continue  # another process got there first
            log.warning("trial %d was left RUNNING by dead worker %s: FAIL", t.number, worker)
            if self.retry_dead and t.user_attrs.get(ATTR_RETRY_OF) is None:
                study.enqueue_trial(dict(t.params), user_attrs={ATTR_RETRY_OF: t.number})
                log.warning("trial %d's params enqueued for a retry", t.number)

    def _open_study(self, dists: dict[str, Any]) -> Any:
        import optuna

        from snnbench.sweep import SweepConfigError, open_storage, redact, resolve_storage

        assert self.config is not None
        cwd = Path(self.config.hydra.runtime.cwd)
        self.storage_spec = resolve_storage(self.storage, Path(self.config.hydra.sweep.dir), cwd)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            storage = open_storage(self.storage_spec)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                direction=self.direction,
                load_if_exists=True,
            )
        except ImportError as exc:
            raise SweepConfigError(
                f"hydra.sweeper.storage={redact(self.storage_spec)!r} needs a driver: {exc}"
            ) from None
        except Exception as exc:
            msg = " ".join(str(exc).split())[:300]
            raise SweepConfigError(
                f"hydra.sweeper.storage={redact(self.storage_spec)!r} cannot be opened: "
                f"{type(exc).__name__}: {msg}"
            ) from None
        from optuna.distributions import check_distribution_compatibility

        for t in study.get_trials(deepcopy=False):
            for name, old in t.distributions.items():
                new = dists.get(name)
                try:
                    if new is not None:
                        check_distribution_compatibility(old, new)
                except ValueError:
                    raise SweepConfigError(
                        f"the search space of {name} ({new!r}) does not fit study "
                        f"{self.study_name!r} (its trials used {old!r}); keep it or use a new "
                        "hydra.sweeper.study_name"
                    ) from None
        if study.direction.name.lower() != self.direction:
            raise SweepConfigError(
                f"hydra.sweeper.direction={self.direction!r} but study {self.study_name!r} in "
                f"{redact(self.storage_spec)} is {study.direction.name.lower()}"
            )
        return study

    def _ask(self, study: Any, dists: dict[str, Any]) -> Any | None:
        """Ask one trial and sample its params; None if the study is at ``max_trials``."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )
        from optuna.trial import TrialState

        from snnbench.sweep import ATTR_PRUNER, ATTR_SKIPPED, ATTR_WORKER, build_sampler

        if self.max_trials is not None:
            trials = study.get_trials(deepcopy=False)
            waiting = any(
                t.state == TrialState.WAITING and t.number < self.max_trials for t in trials
            )
            if len(trials) >= self.max_trials and not waiting:
                return None  # the cap is reached: stop without adding a trial
        trial = study.ask()
        if self.max_trials is not None and trial.number >= self.max_trials:
            # trial numbers are assigned atomically by the storage: the number tells
            # whether this trial fits under the cap, whatever the other workers do
            study._storage.set_trial_system_attr(
                trial._trial_id, ATTR_SKIPPED, f"not run: over max_trials={self.max_trials}"
            )
            study.tell(trial, state=TrialState.FAIL)
            return None
        seed = self.sampler.get("seed")
        study.sampler = build_sampler(self.sampler, None if seed is None else seed + trial.number)
        for name, dist in dists.items():
            if isinstance(dist, FloatDistribution):
                trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, IntDistribution):
                trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, CategoricalDistribution):
                trial.suggest_categorical(name, dist.choices)
        study._storage.set_trial_system_attr(trial._trial_id, ATTR_PRUNER, self.pruner)
        study._storage.set_trial_system_attr(trial._trial_id, ATTR_WORKER, self._worker)
        return trial

    def _job_overrides(self, trial: Any, fixed: list[str]) -> list[str]:
        from snnbench.sweep import override_value

        return [
            *fixed,
            *(f"{k}={override_value(v)}" for k, v in trial.params.items()),
            f"optuna.storage={override_value(self.storage_spec)}",
            f"optuna.study_name={override_value(self.study_name)}",
            f"optuna.trial={trial.number}",
            f"hydra.sweep.subdir={trial.number}",
        ]

    def _tell(self, study: Any, trial: Any, ret: JobReturn | None, lost: Any) -> str:
        """Tell the trial its outcome; returns the state name."""
        from optuna.trial import TrialState

        from snnbench.sweep import ATTR_ERROR, ATTR_RUN_DIR, _read_metrics, error_text

        assert self.config is not None
        run_dir = _output_dir(ret) or str(
            (Path(self.config.hydra.sweep.dir) / str(trial.number)).resolve()
        )
        trial.set_user_attr(ATTR_RUN_DIR, run_dir)
        value: Any = None
        exc: BaseException | None = None
        if ret is None:  # launcher lost the batch: trust what the job recorded, if anything
            record = _read_metrics(run_dir) or {}
            if record.get("status") == "completed" and record.get("history"):
                metric = self.config.get("optimized_metric", "best_val_acc")
                value = (
                    record["history"][-1]["val_acc"]
                    if metric == "final_val_acc"
                    else record.get("best_val_acc")
                )
            elif record.get("status") == "pruned":
                exc = _Pruned(record.get("error"))
            else:
                exc = lost
        elif ret.status == JobStatus.COMPLETED:
            value = ret._return_value
        else:
            exc = ret._return_value
        if exc is None:
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                exc = ValueError(f"the job returned {ret._return_value if ret else value!r}")
        if exc is None:
            study.tell(trial, value)
            log.info("trial %d: %.4f %s", trial.number, value, trial.params)
            return "COMPLETE"
        if isinstance(exc, _Pruned) or type(exc).__name__ == "TrialPruned":
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d: pruned %s", trial.number, trial.params)
            return "PRUNED"
        message = error_text(exc)[:1000]
        trial.set_user_attr(ATTR_ERROR, message)
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s %s", trial.number, message, trial.params)
        return "FAIL"

    # -- the sweep ----------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> Any:
        from snnbench.sweep import SweepConfigError, redact, worker_id, write_study_files

        assert self.config is not None and self.launcher is not None
        try:
            self._check()
            dists, fixed = self._space(arguments)
            study = self._open_study(dists)
        except SweepConfigError as exc:
            _die(str(exc), 2)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        metric = self.config.get("optimized_metric", "best_val_acc")
        self._worker = worker_id()
        self._fail_dead_trials(study)
        log.info(
            "study %r in %s: %d trials so far; this run: up to %d trials, %d at a time%s",
            self.study_name,
            redact(self.storage_spec),
            len(study.get_trials(deepcopy=False)),
            self.n_trials,
            self.n_jobs,
            "" if self.max_trials is None else f", study capped at {self.max_trials}",
        )
        log.info("search space: %s", {k: repr(v) for k, v in dists.items()})

        counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        returns: list[Sequence[JobReturn]] = []
        done, stop_reason = 0, None
        while done < self.n_trials and stop_reason is None:
            trials = []
            for _ in range(min(self.n_jobs, self.n_trials - done)):
                trial = self._ask(study, dists)
                if trial is None:
                    stop_reason = f"the study reached max_trials={self.max_trials}"
                    break
                trials.append(trial)
            if not trials:
                break
            batch = [self._job_overrides(t, fixed) for t in trials]
            lost: BaseException | None = None
            try:
                results: Sequence[JobReturn | None] = self.launcher.launch(
                    batch, initial_job_idx=self.job_idx
                )
            except Exception as exc:  # e.g. a joblib worker process died
                log.error("the launcher lost a batch: %s", exc)
                results, lost = [None] * len(trials), exc
            self.job_idx += len(trials)
            done += len(trials)
            for trial, ret in zip(trials, results):
                counts[self._tell(study, trial, ret, lost)] += 1
            returns.append([r for r in results if r is not None])
            write_study_files(study, sweep_dir, self.storage_spec, {"metric": metric})
            if counts["FAIL"] > self.max_failure_rate * self.n_trials:
                stop_reason = (
                    f"{counts['FAIL']} of {done} trials failed, more than "
                    f"max_failure_rate={self.max_failure_rate} x n_trials={self.n_trials}"
                )

        extra = {
            "metric": metric,
            "this_run": {"trials": done, **{k.lower(): v for k, v in counts.items()}},
        }
        results_ = write_study_files(study, sweep_dir, self.storage_spec, extra)
        log.info(
            "done: %d trials here (%s); study: %s; best value %s, params %s; %s",
            done,
            counts,
            results_["states"],
            results_["best_value"],
            results_["best_params"],
            sweep_dir / "optimization_results.yaml",
        )
        if stop_reason is not None and counts["FAIL"] > self.max_failure_rate * self.n_trials:
            _die(f"sweep stopped: {stop_reason}; see {sweep_dir / 'trials.csv'}", 1)
        if stop_reason is not None:
            log.info("stopped: %s", stop_reason)
        return returns


# ----------------------------------------------------------------------------- dispatch


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
            _die(f"hydra.sweeper.search={search!r} is not allowed; choose grid or optuna", 2)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
