"""Sweeps: Optuna search spaces, storages, samplers and pruners, the job-side trial reporter,
and the result tables (``summary.csv`` of a grid, ``trials.csv`` and
``optimization_results.yaml`` of an Optuna study).

The Hydra sweepers themselves live in the plugin package
``hydra_plugins.snnbench_optuna_sweeper``; this module holds the parts that do not need a
running Hydra (pure functions plus thin I/O), so they are tested directly. Heavy imports
(optuna) happen inside functions: Hydra imports the plugin package at every start.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnbench.results import write_text

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from optuna.distributions import BaseDistribution

SUMMARY_FILE = "summary.csv"
TRIALS_FILE = "trials.csv"
RESULTS_FILE = "optimization_results.yaml"
DEFAULT_STORAGE_FILE = "optuna.db"

#: Trial system attrs written by the sweeper (read by the job and by re-runs).
ATTR_PRUNER = "snnbench:pruner"
ATTR_WORKER = "snnbench:worker"
ATTR_SKIPPED = "snnbench:skipped"
#: Trial user attrs (visible in trials.csv and ``study.trials_dataframe()``).
ATTR_ERROR = "error"
ATTR_RUN_DIR = "run_dir"
ATTR_RETRY_OF = "retry_of"

SUMMARY_COLUMNS = (
    "job",
    "overrides",
    "status",
    "best_val_acc",
    "test_acc",
    "final_test_acc",
    "epochs_completed",
    "train_time_s",
    "run_dir",
    "error",
)


class SweepConfigError(ValueError):
    """A sweeper setting is not allowed (the message names the key)."""


# --------------------------------------------------------------------------- files


def _csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def _read_metrics(run_dir: str | Path | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    try:
        with open(Path(run_dir) / "metrics.json", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def error_text(exc: BaseException) -> str:
    """``"ExceptionType: message"`` on one line (as metrics.json's ``error``)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# --------------------------------------------------------------------------- grid summary


def summary_row(
    job: int,
    overrides: Sequence[str],
    run_dir: str | None,
    exc: BaseException | None,
) -> dict[str, Any]:
    """One ``summary.csv`` row from a job's overrides, run dir and exception (None = ok).

    Metrics come from the job's ``metrics.json``; a job that failed before writing one
    (e.g. a refused config) gets status ``failed`` and the exception as its error.
    """
    record = _read_metrics(run_dir) or {}
    if exc is None:
        status = record.get("status", "completed")
    elif type(exc).__name__ == "TrialPruned":
        status = "pruned"
    else:
        status = "failed"
    error = record.get("error") or (error_text(exc) if exc is not None else None)
    return {
        "job": job,
        "overrides": " ".join(overrides),
        "status": status,
        "best_val_acc": record.get("best_val_acc"),
        "test_acc": record.get("test_acc"),
        "final_test_acc": record.get("final_test_acc"),
        "epochs_completed": record.get("epochs_completed"),
        "train_time_s": record.get("train_time_s"),
        "run_dir": run_dir,
        "error": error if status != "completed" else None,
    }


def write_summary(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write the grid's ``summary.csv`` (columns :data:`SUMMARY_COLUMNS`) atomically."""
    write_text(path, _csv_text(SUMMARY_COLUMNS, sorted(rows, key=lambda r: r["job"])))


# --------------------------------------------------------------------------- search space


def search_space(params: Mapping[str, Any]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Parse ``hydra.sweeper.params`` (Hydra override grammar) into Optuna distributions.

    ``interval(a, b)`` -> float in [a, b] (``int(interval(a, b))`` -> int);
    ``tag(log, interval(a, b))`` -> log scale; ``range(a, b, step=s)`` -> the values Hydra's
    range yields (stop excluded); ``choice(...)`` -> categorical; a plain value is fixed.
    Returns ``(distributions, fixed_overrides)``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    parser = OverridesParser.create()
    dists: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for key, raw in params.items():
        text = f"{key}={raw}"
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as exc:
            raise SweepConfigError(
                f"hydra.sweeper.params.{key}={raw!r} cannot be parsed: {exc}".splitlines()[0]
            ) from None
        name = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(f"{name}={override.get_value_element_as_str()}")
            continue
        value = override.value()
        if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
            choices = list(override.sweep_iterator())
            if not choices:
                raise SweepConfigError(f"hydra.sweeper.params.{key}={raw!r} has no choices")
            dists[name] = CategoricalDistribution(choices)
        elif isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step
            values = list(override.sweep_iterator())
            if not values:
                raise SweepConfigError(
                    f"hydra.sweeper.params.{key}={raw!r} is empty (range excludes its stop)"
                )
            if all(isinstance(v, int) for v in (start, stop, step)):
                dists[name] = IntDistribution(int(values[0]), int(values[-1]), step=int(step))
            else:
                dists[name] = FloatDistribution(
                    float(values[0]), float(values[-1]), step=float(step)
                )
        elif isinstance(value, IntervalSweep):
            log = "log" in value.tags
            lo, hi = value.start, value.end
            if lo is None or hi is None or not lo < hi or (log and lo <= 0):
                raise SweepConfigError(
                    f"hydra.sweeper.params.{key}={raw!r} is not allowed; it needs start < end"
                    + (" and start > 0 (log scale)" if log else "")
                )
            if isinstance(lo, int) and isinstance(hi, int):
                dists[name] = IntDistribution(lo, hi, log=log)
            else:
                dists[name] = FloatDistribution(float(lo), float(hi), log=log)
        else:  # pragma: no cover - Hydra has no other sweep types
            raise SweepConfigError(f"hydra.sweeper.params.{key}={raw!r}: unsupported sweep")
    return dists, fixed


def override_value(value: Any) -> str:
    """A sampled value written in Hydra's override grammar (strings quoted when needed)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w./-]*", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------- storage


def resolve_storage(spec: str | None, sweep_dir: Path | str, cwd: Path | str) -> str:
    """Absolute storage spec: ``None`` -> ``sqlite:///<sweep_dir>/optuna.db``.

    Accepted: any SQLAlchemy URL Optuna takes (``sqlite:///path``, ``postgresql://...``,
    ``mysql+pymysql://...``), ``journal:PATH`` (Optuna's JournalStorage on a file, for many
    processes), or a bare file path (``*.db``/``*.sqlite``/``*.sqlite3`` -> SQLite, ``*.log``/
    ``*.journal`` -> journal). Relative paths are taken from ``cwd`` (where the command ran).
    """
    if spec is None or str(spec).strip() == "":
        return f"sqlite:///{(Path(cwd) / sweep_dir / DEFAULT_STORAGE_FILE).resolve()}"
    spec = str(spec).strip()
    if spec.startswith("journal:"):
        path = spec[len("journal:") :]
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise SweepConfigError("hydra.sweeper.storage='journal:' needs a file path")
        return f"journal:{(Path(cwd) / path).resolve()}"
    if spec.startswith("sqlite:///"):
        path = spec[len("sqlite:///") :]
        if path in ("", ":memory:"):
            raise SweepConfigError(
                "hydra.sweeper.storage: an in-memory SQLite study cannot be shared with the jobs;"
                " give a file"
            )
        return f"sqlite:///{(Path(cwd) / path).resolve()}"
    if "://" in spec:
        return spec
    suffix = Path(spec).suffix.lower()
    if suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{(Path(cwd) / spec).resolve()}"
    if suffix in (".log", ".journal", ".jsonl"):
        return f"journal:{(Path(cwd) / spec).resolve()}"
    raise SweepConfigError(
        f"hydra.sweeper.storage={spec!r} is not allowed; use null (optuna.db in the sweep dir), "
        "a URL (sqlite:///FILE, postgresql://USER@HOST/DB), journal:FILE, or a *.db / *.log file"
    )


def redact(url: str) -> str:
    """The storage spec with any password replaced by ``***`` (for logs and result files)."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def _pg_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def open_storage(spec: str) -> Any:
    """An Optuna storage for a :func:`resolve_storage` spec (SQLite waits for its lock)."""
    import optuna

    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    spec = _pg_driver(spec)
    if spec.startswith("sqlite:"):
        Path(spec[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(spec, engine_kwargs=kwargs)


# --------------------------------------------------------------------------- sampler / pruner

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "threshold", "successive_halving", "none")


def build_sampler(spec: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """``tpe`` (TPESampler) or ``random`` from ``hydra.sweeper.sampler``, seeded with ``seed``."""
    import optuna

    name = spec.get("name", "tpe")
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=int(spec.get("n_startup_trials", 10)),
            multivariate=bool(spec.get("multivariate", False)),
            constant_liar=bool(spec.get("constant_liar", True)),
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SweepConfigError(
        f"hydra.sweeper.sampler.name={name!r} is not allowed; choose one of {', '.join(SAMPLERS)}"
    )


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """A pruner from ``hydra.sweeper.pruner`` (``name`` plus that pruner's settings)."""
    import optuna

    spec = dict(spec or {})
    name = spec.get("name", "median")
    startup, warmup = int(spec.get("n_startup_trials", 5)), int(spec.get("n_warmup_steps", 0))
    interval = int(spec.get("interval_steps", 1))
    if name == "median":
        return optuna.pruners.MedianPruner(startup, warmup, interval)
    if name == "percentile":
        pct = float(spec.get("percentile", 25.0))
        return optuna.pruners.PercentilePruner(pct, startup, warmup, interval)
    if name == "threshold":
        lower, upper = spec.get("lower"), spec.get("upper")
        if lower is None and upper is None:
            raise SweepConfigError(
                "hydra.sweeper.pruner.name=threshold needs hydra.sweeper.pruner.lower or .upper"
            )
        return optuna.pruners.ThresholdPruner(
            lower=lower, upper=upper, n_warmup_steps=warmup, interval_steps=interval
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.get("min_resource") or "auto",
            reduction_factor=int(spec.get("reduction_factor", 4)),
        )
    if name in ("none", None):
        return optuna.pruners.NopPruner()
    raise SweepConfigError(
        f"hydra.sweeper.pruner.name={name!r} is not allowed; choose one of {', '.join(PRUNERS)}"
    )


# --------------------------------------------------------------------------- job side


_JOB_STORAGES: dict[str, Any] = {}


def trial_reporter(
    storage: str, study_name: str, number: int
) -> Callable[[int, dict[str, Any]], None]:
    """The job's ``on_epoch`` for Optuna trial ``number`` of ``study_name`` in ``storage``.

    It opens the study, builds the live ``optuna.trial.Trial`` (not a FrozenTrial: only a
    live trial prunes) with the pruner the sweeper attached to the trial, and after each
    epoch reports the epoch's validation accuracy; when the pruner says so it raises
    ``optuna.TrialPruned`` (``run`` records the run ``pruned`` and re-raises it, and the
    sweeper tells the trial PRUNED).
    """
    import optuna

    if storage not in _JOB_STORAGES:  # one per storage and process (jobs may share one)
        _JOB_STORAGES[storage] = open_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=_JOB_STORAGES[storage])
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    frozen = study._storage.get_trial(trial_id)
    study.pruner = build_pruner(frozen.system_attrs.get(ATTR_PRUNER))
    trial = optuna.trial.Trial(study, trial_id)

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        val_acc = record["history"][-1]["val_acc"]
        trial.report(float(val_acc), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"trial {number} pruned after epoch {epoch} (val_acc {val_acc:.4f})"
            )

    return on_epoch


# --------------------------------------------------------------------------- worker identity


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    """``host:pid:start`` of this process (recorded on the trials it runs)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or ''}"


def worker_alive(worker: str) -> bool | None:
    """True/False if ``worker`` ran on this host and is/isn't alive; None if unknowable."""
    try:
        host, pid_s, start = worker.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _proc_start(pid)
    return not (start and now is not None and now != start)


# --------------------------------------------------------------------------- study results


def _duration_s(trial: optuna.trial.FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)


def trial_rows(study: optuna.Study) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of ``trials.csv``: one row per trial of the study (all workers)."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    columns = [
        "number",
        "state",
        "value",
        *(f"params.{n}" for n in names),
        "last_step",
        "duration_s",
        "datetime_start",
        "datetime_complete",
        "run_dir",
        "error",
    ]
    rows = []
    for t in trials:
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.values is not None and len(t.values) == 1 else None,
            "last_step": t.last_step,
            "duration_s": _duration_s(t),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "run_dir": t.user_attrs.get(ATTR_RUN_DIR),
            "error": t.user_attrs.get(ATTR_ERROR) or t.system_attrs.get(ATTR_SKIPPED),
        }
        row.update({f"params.{n}": t.params.get(n) for n in names})
        rows.append(row)
    return columns, rows


def study_results(study: optuna.Study, storage: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``optimization_results.yaml``: best params and value, trial counts."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = study.best_trial if complete else None
    out: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": redact(storage),
        "direction": study.direction.name.lower(),
        "metric": "best_val_acc",  # replaced by the sweeper's optimized_metric via extra
        "best_params": dict(best.params) if best else None,
        "best_value": float(best.value) if best else None,
        "best_trial": best.number if best else None,
        "best_run_dir": best.user_attrs.get(ATTR_RUN_DIR) if best else None,
        "n_trials": len(trials),
        "states": {k: v for k, v in counts.items() if v},
    }
    out.update(extra)
    return out


def write_study_files(
    study: optuna.Study, sweep_dir: Path, storage: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``trials.csv`` and ``optimization_results.yaml`` into ``sweep_dir`` atomically."""
    from omegaconf import OmegaConf

    columns, rows = trial_rows(study)
    write_text(Path(sweep_dir) / TRIALS_FILE, _csv_text(columns, rows))
    results = study_results(study, storage, extra)
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in results.items()
    }
    write_text(Path(sweep_dir) / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(clean)))
    return results
