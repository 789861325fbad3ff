"""Result tables of sweeps: a grid's ``summary.csv``; an Optuna study's ``trials.csv`` and
``optimization_results.yaml`` (written atomically after every batch)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnbench.run.results import write_text
from snnbench.sweeps.names import (
    ATTR_ERROR,
    ATTR_RUN_DIR,
    ATTR_SKIPPED,
    RESULTS_FILE,
    TRIALS_FILE,
)
from snnbench.sweeps.storage import redact
from snnbench.sweeps.study import retry_history

if TYPE_CHECKING:  # pragma: no cover
    import optuna

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
#: ``trials.csv``'s error for a trial Optuna failed because its heartbeat stopped.
LOST_ERROR = "lost: no heartbeat within grace_period (its job or worker stopped)"


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header; None is written as an empty field."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def read_metrics(run_dir: str | Path | None) -> dict[str, Any] | None:
    """A run dir's ``metrics.json``, or None if absent or unreadable."""
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
    record = read_metrics(run_dir) or {}
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
    write_text(path, csv_text(SUMMARY_COLUMNS, sorted(rows, key=lambda r: r["job"])))


# --------------------------------------------------------------------------- Optuna study


def _duration_s(trial: optuna.trial.FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)


def _error(trial: optuna.trial.FrozenTrial) -> str | None:
    if trial.user_attrs.get(ATTR_ERROR) or trial.system_attrs.get(ATTR_SKIPPED):
        return trial.user_attrs.get(ATTR_ERROR) or trial.system_attrs.get(ATTR_SKIPPED)
    # the sweeper records an error on every trial it fails; Optuna's stale check does not
    return LOST_ERROR if trial.state.name == "FAIL" else None


def trial_rows(study: optuna.Study) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of ``trials.csv``: one row per trial of the study (all workers).

    ``retried_from`` is the lost trial a retry continues (empty for a new trial).
    """
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
        "retried_from",
        "run_dir",
        "error",
    ]
    rows = []
    for t in trials:
        history = retry_history(t)
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.values is not None and len(t.values) == 1 else None,
            "last_step": t.last_step,
            "duration_s": _duration_s(t),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "retried_from": history[-1] if history else None,
            "run_dir": t.user_attrs.get(ATTR_RUN_DIR),
            "error": _error(t),
        }
        row.update({f"params.{n}": t.params.get(n) for n in names})
        rows.append(row)
    return columns, rows


def study_results(study: optuna.Study, storage: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``optimization_results.yaml``: best params and value, trial counts,
    and the retry chains (``retries``: retry number -> the lost trials it continues)."""
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
        "best_params": dict(best.params) if best else None,
        "best_value": float(best.value) if best else None,
        "best_trial": best.number if best else None,
        "best_run_dir": best.user_attrs.get(ATTR_RUN_DIR) if best else None,
        "n_trials": len(trials),
        "states": {k: v for k, v in counts.items() if v},
        "retries": {t.number: retry_history(t) for t in trials if retry_history(t)},
    }
    out.update(extra)
    return out


def write_study_files(
    study: optuna.Study, sweep_dir: Path, storage: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``trials.csv`` and ``optimization_results.yaml`` into ``sweep_dir`` atomically."""
    from omegaconf import OmegaConf

    columns, rows = trial_rows(study)
    write_text(Path(sweep_dir) / TRIALS_FILE, csv_text(columns, rows))
    results = study_results(study, storage, extra)
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in results.items()
    }
    write_text(Path(sweep_dir) / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(clean)))
    return results
