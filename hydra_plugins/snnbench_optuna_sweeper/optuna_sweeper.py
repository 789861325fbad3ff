"""``hydra.sweeper.search=optuna``: an Optuna ask/tell sweep, one Hydra job per trial.

Persistent, shareable studies (any number of sweep processes on one storage), pruning
through the storage, failure isolation, a study-wide trial cap, and lost trials retried
from their last checkpoint: database storages detect lost trials by Optuna's heartbeats
(any host), journal storages by a same-host process check. See README "Sweeps".
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.snnbench_optuna_sweeper.common import die

log = logging.getLogger(__name__)

#: Run statuses after which a job's ``metrics.json`` holds its outcome.
FINAL_STATUSES = ("completed", "pruned", "failed")


class _Pruned(Exception):
    """Stands for a job's ``optuna.TrialPruned`` when only its metrics.json is left."""


def _lost(ret: JobReturn) -> bool:
    """A job the launcher lost (cancelled, node failure): it ended without a result."""
    from snnbench.sweeps.workers import JobLost

    return ret.status == JobStatus.FAILED and isinstance(ret._return_value, JobLost)


def _quiet_optuna() -> None:
    """Heartbeats with ask/tell are used as intended here: silence Optuna's notices."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")


def _redact_config(config: DictConfig) -> None:
    """Mask the storage password in the sweep's config (saved as multirun.yaml and composed
    into every job's ``.hydra/hydra.yaml``) and in Hydra's copy of it."""
    from snnbench.sweeps.storage import redact

    for cfg in (config, HydraConfig.instance().cfg):
        if cfg is None or "hydra" not in cfg:
            continue
        with read_write(cfg), open_dict(cfg):
            if cfg.hydra.sweeper.get("storage"):
                cfg.hydra.sweeper.storage = redact(str(cfg.hydra.sweeper.storage))
            cfg.hydra.overrides.hydra = [redact(str(o)) for o in cfg.hydra.overrides.hydra]


class _Keeper:
    """While a batch runs: keep the heartbeat of its trials whose job has not started (or
    has ended), and fail stale trials of the study (their retries are enqueued)."""

    def __init__(self, sweeper: OptunaSweeper, study: Any, trials: Sequence[Any]) -> None:
        self.sweeper, self.study, self.trials = sweeper, study, trials
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from snnbench.sweeps.names import ATTR_JOB

        storage = self.study._storage
        while not self.stop.wait(self.sweeper.heartbeat_interval):
            try:
                for trial in self.trials:
                    frozen = storage.get_trial(trial._trial_id)
                    if not frozen.state.is_finished() and not frozen.system_attrs.get(ATTR_JOB):
                        storage.record_heartbeat(trial._trial_id)
                self.sweeper._fail_stale(self.study)
            except Exception as exc:  # a database hiccup: try again next interval
                log.warning("heartbeat keeper: %s", exc)

    def __enter__(self) -> _Keeper:
        if self.sweeper.heartbeats:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


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
        max_retries: int,
        heartbeat_interval: int,
        grace_period: int,
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
        self.max_retries = max_retries
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.sampler = dict(OmegaConf.to_container(sampler, resolve=True) if sampler else {})
        self.pruner = dict(OmegaConf.to_container(pruner, resolve=True) if pruner else {})
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0
        self.heartbeats = False
        self.storage_spec = ""
        self._lost_dirs: dict[int, str | None] = {}  # retry number -> the lost trial's run dir

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        _redact_config(config)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # -- checks -------------------------------------------------------------------------

    def _check(self) -> None:
        from snnbench.sweeps.samplers import build_pruner, build_sampler
        from snnbench.sweeps.settings import SweepConfigError

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
        if self.max_retries < 0:
            bad("max_retries", self.max_retries, "it must be an integer >= 0")
        if self.heartbeat_interval < 1:
            bad("heartbeat_interval", self.heartbeat_interval, "it must be an integer >= 1 (s)")
        if self.grace_period <= self.heartbeat_interval:
            bad(
                "grace_period",
                self.grace_period,
                f"it must exceed heartbeat_interval={self.heartbeat_interval} (s)",
            )
        if not self.study_name:
            bad("study_name", self.study_name, "it must be a non-empty name")
        build_sampler(self.sampler, 0)
        build_pruner(self.pruner)

    def _space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """(distributions, fixed overrides): ``params`` plus sweeps given on the command line."""
        from snnbench.sweeps.settings import SweepConfigError
        from snnbench.sweeps.space import search_space

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
            raise SweepConfigError(
                "hydra.sweeper.params is empty: nothing to search (use hparams_search=optuna "
                "or give e.g. 'neuron.beta=interval(0.5, 0.99)')"
            )
        return dists, fixed

    # -- the study ----------------------------------------------------------------------

    def _open_study(self, dists: dict[str, Any], fixed: list[str]) -> Any:
        import optuna
        from optuna.distributions import check_distribution_compatibility

        from snnbench.sweeps.samplers import build_sampler
        from snnbench.sweeps.settings import SweepConfigError
        from snnbench.sweeps.storage import is_journal, open_storage, redact, resolve_storage
        from snnbench.sweeps.study import check_definition, retry_callback, study_definition

        assert self.config is not None
        from snnbench.run.credentials import register, reveal

        cwd = Path(self.config.hydra.runtime.cwd)
        given = None if self.storage is None else reveal(str(self.storage))
        self.storage_spec = resolve_storage(given, Path(self.config.hydra.sweep.dir), cwd)
        register(self.storage_spec)  # the jobs find the real URL in the environment
        self.heartbeats = not is_journal(self.storage_spec)
        where = redact(self.storage_spec)
        try:
            if self.heartbeats:
                storage = open_storage(
                    self.storage_spec,
                    heartbeat_interval=self.heartbeat_interval,
                    grace_period=self.grace_period,
                    stale_callback=retry_callback(self.max_retries) if self.max_retries else None,
                )
            else:
                storage = open_storage(self.storage_spec)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                direction=self.direction,
                load_if_exists=True,
            )
        except ImportError as exc:
            raise SweepConfigError(
                f"hydra.sweeper.storage={where!r} needs a driver: {exc}"
            ) from None
        except Exception as exc:
            msg = redact(" ".join(str(exc).split()))[:300]
            raise SweepConfigError(
                f"hydra.sweeper.storage={where!r} cannot be opened: {type(exc).__name__}: {msg}"
            ) from None
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
                f"{where} is {study.direction.name.lower()}"
            )
        metric = self.config.get("optimized_metric", "best_val_acc")
        check_definition(study, study_definition(fixed, metric, self.direction), where)
        # seeded once; offset by the trials already in the study, so a re-run never
        # replays the draws of an earlier one
        seed = self.sampler.get("seed")
        n_existing = len(study.get_trials(deepcopy=False))
        study.sampler = build_sampler(self.sampler, None if seed is None else seed + n_existing)
        return study

    def _fail_stale(self, study: Any) -> None:
        """Database storages: Optuna fails trials without a heartbeat for ``grace_period``
        s and enqueues their retries (any host). Journal: nothing to do here."""
        if self.heartbeats:
            from optuna.storages import fail_stale_trials

            fail_stale_trials(study)

    def _fail_dead_local_trials(self, study: Any) -> None:
        """Journal storages (no heartbeats): trials left RUNNING whose process on this host
        is gone -- the job if it had started, else the sweep process -- are marked FAIL and
        retried. Running trials of live or remote processes are left alone."""
        from optuna.trial import TrialState

        from snnbench.sweeps.names import ATTR_ERROR, ATTR_JOB, ATTR_WORKER
        from snnbench.sweeps.study import fail_and_retry
        from snnbench.sweeps.workers import worker_alive

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            proc = t.system_attrs.get(ATTR_JOB) or t.system_attrs.get(ATTR_WORKER)
            alive = worker_alive(proc) if proc else None
            if alive is None:
                log.warning("trial %d RUNNING on %s (elsewhere): left alone", t.number, proc)
            elif not alive:
                error = f"lost: the process running it ({proc}) died"
                if fail_and_retry(study, t._trial_id, error, self.max_retries, ATTR_ERROR):
                    log.warning("trial %d %s: FAIL, retried", t.number, error)

    def _ask(self, study: Any, dists: dict[str, Any], new: bool) -> tuple[Any, bool] | None:
        """Ask a trial: a waiting retry first, else (if ``new``) a new one within
        ``max_trials``. Returns (trial with params sampled, is a retry) or None.

        The cap counts new trials only: a retry stands for its lost trial. Trial numbers are
        assigned atomically by the storage and retries are marked when created, so whether a
        new trial fits under the cap (fewer than ``max_trials`` new trials numbered before
        it) is decided the same way by every worker, whatever the others do.
        """
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )
        from optuna.trial import TrialState

        from snnbench.sweeps.names import (
            ATTR_HEARTBEAT,
            ATTR_JOB,
            ATTR_PRUNER,
            ATTR_RUN_DIR,
            ATTR_SKIPPED,
            ATTR_WORKER,
        )
        from snnbench.sweeps.study import retry_history

        cap = self.max_trials
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        n_new = sum(not retry_history(t) for t in trials)
        if not waiting and (not new or (cap is not None and n_new >= cap)):
            return None
        storage = study._storage
        trial = study.ask()
        frozen = storage.get_trial(trial._trial_id)
        is_retry = bool(retry_history(frozen))
        if not is_retry and cap is not None:
            before = study.get_trials(deepcopy=False)
            rank = sum(t.number < trial.number and not retry_history(t) for t in before)
            if rank >= cap:
                storage.set_trial_system_attr(
                    trial._trial_id, ATTR_SKIPPED, f"not run: over max_trials={cap}"
                )
                study.tell(trial, state=TrialState.FAIL)
                return None
        for name, dist in dists.items():
            if isinstance(dist, FloatDistribution):
                trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, IntDistribution):
                trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, CategoricalDistribution):
                trial.suggest_categorical(name, dist.choices)
        self._lost_dirs[trial.number] = frozen.user_attrs.get(ATTR_RUN_DIR) if is_retry else None
        storage.set_trial_system_attr(trial._trial_id, ATTR_PRUNER, self.pruner)
        storage.set_trial_system_attr(trial._trial_id, ATTR_WORKER, self._worker)
        storage.set_trial_system_attr(trial._trial_id, ATTR_JOB, None)
        if self.heartbeats:  # a trial without any heartbeat is never considered stale
            storage.set_trial_system_attr(trial._trial_id, ATTR_HEARTBEAT, self.heartbeat_interval)
            storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr(ATTR_RUN_DIR, str(self._run_dir(trial)))
        return trial, is_retry

    def _run_dir(self, trial: Any) -> Path:
        assert self.config is not None
        return (Path(self.config.hydra.sweep.dir) / str(trial.number)).resolve()

    def _job_overrides(self, trial: Any, fixed: list[str]) -> list[str]:
        """The trial's overrides; the storage is redacted (the jobs read the full spec from
        the environment). A retry of a lost trial resumes from its copied checkpoint."""
        from snnbench.sweeps.space import override_value
        from snnbench.sweeps.storage import redact
        from snnbench.sweeps.study import copy_for_resume

        overrides = [
            *fixed,
            *(f"{k}={override_value(v)}" for k, v in trial.params.items()),
            f"optuna.storage={override_value(redact(self.storage_spec))}",
            f"optuna.study_name={override_value(self.study_name)}",
            f"optuna.trial={trial.number}",
            f"hydra.sweep.subdir={trial.number}",
        ]
        lost_dir = self._lost_dirs.get(trial.number)
        if copy_for_resume(lost_dir, self._run_dir(trial)):
            log.info("trial %d continues from %s", trial.number, lost_dir)
            overrides = [o for o in overrides if not o.startswith("trainer.resume=")]
            overrides.append("trainer.resume=true")
        return overrides

    # -- outcomes -----------------------------------------------------------------------

    def _value(self, record: dict[str, Any]) -> Any:
        assert self.config is not None
        if self.config.get("optimized_metric", "best_val_acc") == "final_val_acc":
            return record["history"][-1]["val_acc"]
        return record.get("best_val_acc")

    def _tell(self, study: Any, trial: Any, value: Any, exc: BaseException | None) -> str:
        """Tell the trial its outcome (unless another process finished it); the state name."""
        from optuna.trial import TrialState

        from snnbench.sweeps.names import ATTR_ERROR
        from snnbench.sweeps.tables import error_text

        if exc is None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                exc = ValueError(f"the job returned {value!r}")
        if exc is None:
            study.tell(trial, number, skip_if_finished=True)
            log.info("trial %d: %.4f %s", trial.number, number, trial.params)
            return "COMPLETE"
        if isinstance(exc, _Pruned) or type(exc).__name__ == "TrialPruned":
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            log.info("trial %d: pruned %s", trial.number, trial.params)
            return "PRUNED"
        message = error_text(exc)[:1000]
        try:
            trial.set_user_attr(ATTR_ERROR, message)
        except Exception:  # already finished by another process
            pass
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        log.warning("trial %d failed: %s %s", trial.number, message, trial.params)
        return "FAIL"

    def _outcomes(self, study: Any, trials: list[Any], results: Sequence[Any]) -> list[str]:
        """Tell each trial of a batch its outcome. Trials whose job result the launcher lost
        (a job killed by the OS loses its whole batch) are waited for: a job still running
        ends and leaves its metrics.json; a dead one is failed and retried -- by Optuna's
        stale check (database storages) or the same-host process check (journal)."""
        from snnbench.sweeps.names import ATTR_ERROR, ATTR_JOB
        from snnbench.sweeps.study import fail_and_retry
        from snnbench.sweeps.tables import read_metrics
        from snnbench.sweeps.workers import worker_alive

        states: dict[int, str] = {}
        pending = []
        for trial, ret in zip(trials, results):
            if ret is None or _lost(ret):  # its record and heartbeat decide (below)
                pending.append(trial)
            elif ret.status == JobStatus.COMPLETED:
                states[trial.number] = self._tell(study, trial, ret._return_value, None)
            else:
                states[trial.number] = self._tell(study, trial, None, ret._return_value)
        since = time.monotonic()
        while pending:
            for trial in list(pending):
                frozen = study._storage.get_trial(trial._trial_id)
                record = read_metrics(self._run_dir(trial)) or {}
                status = record.get("status")
                if frozen.state.is_finished():  # failed as lost (and retried) meanwhile
                    states[trial.number] = "LOST"
                elif status == "completed":
                    states[trial.number] = self._tell(study, trial, self._value(record), None)
                elif status in FINAL_STATUSES:
                    exc = _Pruned(record.get("error")) if status == "pruned" else None
                    exc = exc or RuntimeError(record.get("error") or "the job failed")
                    states[trial.number] = self._tell(study, trial, None, exc)
                elif not self.heartbeats:
                    job = frozen.system_attrs.get(ATTR_JOB)
                    alive = worker_alive(job) if job else None
                    waited = time.monotonic() - since
                    if alive is False or (not job and waited > self.grace_period):
                        error = f"lost: its job ({job or 'not started'}) died"
                        fail_and_retry(study, trial._trial_id, error, self.max_retries, ATTR_ERROR)
                        states[trial.number] = "LOST"
                if trial.number in states:
                    pending.remove(trial)
                    if states[trial.number] == "LOST":
                        log.warning("trial %d was lost with its job", trial.number)
            if pending:
                self._fail_stale(study)
                time.sleep(self._poll_s())
        return [states[t.number] for t in trials]

    def _poll_s(self) -> float:
        return float(min(self.heartbeat_interval, 10))

    def _running(self, study: Any) -> bool:
        from optuna.trial import TrialState

        return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    # -- the sweep ----------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> Any:
        from snnbench.run.run_folder import worker_id
        from snnbench.sweeps.names import RESULTS_FILE, TRIALS_FILE
        from snnbench.sweeps.settings import SweepConfigError
        from snnbench.sweeps.storage import redact
        from snnbench.sweeps.tables import write_study_files

        assert self.config is not None and self.launcher is not None
        _quiet_optuna()
        try:
            self._check()
            dists, fixed = self._space(arguments)
            study = self._open_study(dists, fixed)
        except SweepConfigError as exc:
            die(str(exc), 2)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        metric = self.config.get("optimized_metric", "best_val_acc")
        self._worker = worker_id()
        if not self.heartbeats:
            self._fail_dead_local_trials(study)
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

        counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "LOST": 0}
        returns: list[Sequence[JobReturn]] = []
        done, stop_reason = 0, None  # done: new trials this run asked for (not retries)
        while stop_reason is None:
            self._fail_stale(study)  # lost trials of any worker: failed, retries enqueued
            trials: list[Any] = []
            for _ in range(self.n_jobs):
                asked = self._ask(study, dists, new=done < self.n_trials)
                if asked is None:
                    break
                trials.append(asked[0])
                done += 0 if asked[1] else 1
            if not trials:
                if self.heartbeats and self.max_trials is not None and self._running(study):
                    # a trial still runs elsewhere: if it is lost, its retry needs a worker
                    time.sleep(self._poll_s())
                    continue
                if self.max_trials is not None and done < self.n_trials:
                    stop_reason = f"the study reached max_trials={self.max_trials}"
                break
            batch = [self._job_overrides(t, fixed) for t in trials]
            results: Sequence[JobReturn | None]
            with _Keeper(self, study, trials):
                try:
                    results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
                except Exception as exc:  # a job process died (killed, out of memory, ...)
                    log.error("the launcher lost a batch: %s", redact(str(exc))[:500])
                    results = [None] * len(trials)
            self.job_idx += len(trials)
            for state in self._outcomes(study, trials, results):
                counts[state] += 1
            returns.append([r for r in results if r is not None])
            write_study_files(study, sweep_dir, self.storage_spec, {"metric": metric})
            if counts["FAIL"] > self.max_failure_rate * self.n_trials:
                stop_reason = (
                    f"{counts['FAIL']} of {done} trials failed, more than "
                    f"max_failure_rate={self.max_failure_rate} x n_trials={self.n_trials}"
                )

        retries = sum(counts.values()) - done  # retries of lost trials run here
        extra = {
            "metric": metric,
            "this_run": {
                "trials": done,
                "retries": retries,
                **{k.lower(): v for k, v in counts.items()},
            },
        }
        results_ = write_study_files(study, sweep_dir, self.storage_spec, extra)
        log.info(
            "done: %d new trials and %d retries here (%s); study: %s; best value %s, params %s; %s",
            done,
            retries,
            counts,
            results_["states"],
            results_["best_value"],
            results_["best_params"],
            sweep_dir / RESULTS_FILE,
        )
        if counts["FAIL"] > self.max_failure_rate * self.n_trials:
            die(f"sweep stopped: {stop_reason}; see {sweep_dir / TRIALS_FILE}", 1)
        if stop_reason is not None:
            log.info("stopped: %s", stop_reason)
        return returns
