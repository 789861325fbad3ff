"""Find runs on disk and load them into DataFrames; damaged or unfinished runs are reported.

A *run dir* is a folder holding ``metrics.json`` (``outputs/DATE/TIME/``,
``multirun/DATE/TIME/N/``, a sweep's job folder, or any ``hydra.run.dir``). :func:`collect`
walks the given paths, reads every record it can, and never raises for a bad run: those
land in :attr:`Collection.problems` with the reason.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from snnbench.config import ADDED_MODEL_KEYS, flatten, is_spiking

METRICS_FILE = "metrics.json"
OPTUNA_DB = "optuna.db"

#: Keys a record must have to be used (the rest of the schema is optional).
REQUIRED_KEYS = ("status", "config", "history")

#: Short column names -> where they come from in the flattened config. For the ANN,
#: the spiking-only ones (encoding, neuron, T, beta, engine, readout) are left empty.
ALIASES: dict[str, str] = {
    "model": "model.name",
    "encoding": "encoding.name",
    "neuron": "neuron.name",
    "T": "model.num_steps",
    "beta": "neuron.beta",
    "readout": "model.readout",
    "engine": "model.engine",
    "lr": "optimizer.lr",
    "optimizer": "optimizer.name",
    "seed": "trainer.seed",
    "dataset": "dataset.name",
    "batch_size": "trainer.batch_size",
    "tag": "tag",
}
SPIKING_ONLY = ("encoding", "neuron", "T", "beta", "readout", "engine")

#: Final metrics taken from the record (None when absent).
RECORD_METRICS = (
    "test_acc",
    "best_val_acc",
    "final_test_acc",
    "best_epoch",
    "epochs",
    "epochs_completed",
    "train_time_s",
    "n_params",
    "device",
    "started_at",
    "finished_at",
    "error",
)

#: Scalars taken from the record's ``spiking`` section, NaN when absent.
SPIKING_METRICS = (
    "synops_per_sample",
    "acs_per_sample",
    "macs_per_sample",
    "neuron_updates_per_sample",
    "activation_sparsity",
    "energy_per_inference_uj",
    "footprint_bytes",
    "connection_sparsity",
    "settle_step_mean",
)

#: Columns holding whole numbers (nullable: the ANN has no T).
INT_COLUMNS = ("T", "seed", "epochs", "epochs_completed", "best_epoch", "n_params", "batch_size")

#: Metrics a table or figure may be built on.
METRICS = ("test_acc", "best_val_acc", "final_test_acc")

#: Config keys that say how a run was executed, not what it computed.
RUNTIME_KEYS = (
    "run_dir",
    "tag",
    "trainer.test_every_epoch",
    "optimized_metric",
    "trainer.seed",
    "trainer.resume",
    "trainer.progress",
    "trainer.num_threads",
    "trainer.device",
    "dataset.root",
    "dataset.download",
    "optuna.storage",
    "optuna.study_name",
    "optuna.trial",
)


@dataclass
class Problem:
    """A run left out of the tables; ``kind``: running, failed, pruned, partial, corrupt, empty."""

    run_dir: str
    kind: str
    reason: str


@dataclass
class Collection:
    """What :func:`collect` found.

    runs: one row per readable run (any status); history: one row per (run, epoch);
    problems: every run left out of the tables, with the reason; roots: the paths given;
    optuna_dbs: Optuna SQLite storages found next to the runs.
    """

    runs: pd.DataFrame
    history: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)
    optuna_dbs: list[Path] = field(default_factory=list)

    @property
    def completed(self) -> pd.DataFrame:
        """Runs with status ``completed`` and all planned epochs done (what tables use)."""
        if self.runs.empty:
            return self.runs
        return self.runs[self.runs["usable"]]

    @property
    def completed_history(self) -> pd.DataFrame:
        """Per-epoch rows of the completed runs only."""
        if self.history.empty:
            return self.history
        return self.history[self.history["run_dir"].isin(set(self.completed["run_dir"]))]

    def problem_counts(self) -> dict[str, int]:
        """Number of left-out runs per kind."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out


class NoRunsError(ValueError):
    """A path does not exist or holds no run (one-line message naming it)."""


def find_run_dirs(path: Path) -> tuple[list[Path], list[Path]]:
    """Run dirs under ``path`` (or ``path`` itself) and Hydra job dirs lacking a record.

    Returns (dirs with metrics.json, job dirs with ``.hydra/`` but no metrics.json), sorted.
    """
    path = Path(path)
    if (path / METRICS_FILE).is_file():
        return [path], []
    runs: list[Path] = []
    empty: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if METRICS_FILE in filenames:
            runs.append(here)
            dirnames[:] = []  # a run dir holds no further runs
        elif (here / ".hydra").is_dir() and not (here / "multirun.yaml").is_file():
            empty.append(here)
    return sorted(runs, key=_natural), sorted(empty, key=_natural)


def _natural(p: Path) -> list[Any]:
    """Sort key putting multirun/…/2 before multirun/…/10."""
    return [int(part) if part.isdigit() else part for part in p.parts]


def find_optuna_dbs(paths: list[Path]) -> list[Path]:
    """``optuna.db`` files under the paths, or next to a single run dir given directly."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.is_file() and path.name.endswith(".db"):
            found.add(path.resolve())
            continue
        if (path / METRICS_FILE).is_file():
            candidate = path.parent / OPTUNA_DB
            if candidate.is_file():
                found.add(candidate.resolve())
            continue
        for db in path.rglob(OPTUNA_DB) if path.is_dir() else []:
            found.add(db.resolve())
    return sorted(found)


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def parse_record(record: Any, run_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One record -> (row, history rows). Raises ValueError naming what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"metrics.json holds a {type(record).__name__}, not an object")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"metrics.json lacks {', '.join(missing)}")
    config, history = record["config"], record["history"]
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError("metrics.json 'config' has no 'model' section")
    if "name" not in config["model"]:
        raise ValueError("metrics.json 'config.model' has no 'name'")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ValueError("metrics.json 'history' is not a list of epoch records")

    flat = flatten(config, lists_as_json=True)
    # a non-spiking model: the ANNs, or any model run without a time axis (num_steps null)
    model = config["model"]
    if "num_steps" in model:
        is_ann = not is_spiking({"model": model})
    else:  # a hand-written record
        is_ann = model.get("name") == "ann"
    if str(model.get("_target_") or "snnbench.").startswith("snnbench."):
        for key, default in ADDED_MODEL_KEYS.items():  # a built-in model's newer keys
            if key != "dropout_mask" or not is_ann:
                flat.setdefault(f"model.{key}", default)
    row: dict[str, Any] = {f"config.{k}": v for k, v in flat.items()}
    for alias, key in ALIASES.items():
        row[alias] = None if (is_ann and alias in SPIKING_ONLY) else flat.get(key)
    for key in RECORD_METRICS:
        row[key] = record.get(key)
    row["status"] = record["status"]
    row["run_dir"] = run_dir
    epochs_done = len(history)
    if row["epochs_completed"] is None:
        row["epochs_completed"] = epochs_done
    if row["epochs"] is None:
        row["epochs"] = flat.get("trainer.epochs")
    times = [_num(h.get("time_s")) for h in history]
    times = [t for t in times if not math.isnan(t)]
    row["time_per_epoch_s"] = sum(times) / len(times) if times else math.nan
    evals = [_num(h.get("eval_time_s")) for h in history]
    row["epochs_time_s"] = sum(times) + sum(t for t in evals if not math.isnan(t))
    row["overrides"] = json.dumps(record.get("overrides") or [])
    spiking = record.get("spiking")
    spiking = spiking if isinstance(spiking, dict) else {}
    for key in SPIKING_METRICS:
        row[key] = _num(spiking.get(key))
    costs = spiking.get("energy_model")
    row["energy_model"] = (
        ", ".join(f"{k.removesuffix('_pj').upper()} {v} pJ" for k, v in costs.items())
        if isinstance(costs, dict)
        else None
    )
    curve = spiking.get("latency_curve")
    row["latency_curve"] = [float(a) for a in curve] if isinstance(curve, list) and curve else None
    rows = []
    for h in history:
        entry = {k: v for k, v in h.items() if not isinstance(v, (dict, list))}
        entry["run_dir"] = run_dir
        rows.append(entry)
    return row, rows


def _status_problem(row: dict[str, Any]) -> Problem | None:
    """Why a readable run is left out of the tables (None when it is usable)."""
    status, run_dir = row["status"], row["run_dir"]
    done, planned = row["epochs_completed"], row["epochs"]
    progress = f"{done}/{planned} epochs done"
    if status == "completed":
        if isinstance(planned, int) and isinstance(done, int) and done < planned:
            return Problem(run_dir, "partial", f"marked completed but only {progress}")
        if row["test_acc"] is None:
            return Problem(run_dir, "partial", "completed but has no test_acc")
        return None
    if status == "running":
        return Problem(
            run_dir,
            "running",
            f"still running, or killed ({progress}; resume with trainer.resume=true)",
        )
    if status == "interrupted":
        why = f"stopped by Ctrl-C ({progress}; resume with trainer.resume=true)"
        return Problem(run_dir, "interrupted", why)
    if status == "failed":
        return Problem(run_dir, "failed", f"{row['error'] or 'no error recorded'} ({progress})")
    if status == "pruned":
        return Problem(run_dir, "pruned", f"pruned by the sweeper ({progress})")
    return Problem(run_dir, "corrupt", f"unknown status {status!r}")


def collect(paths: list[str | Path]) -> Collection:
    """Read every run under ``paths`` into a :class:`Collection`.

    Raises :class:`NoRunsError` if a path does not exist or holds no run dir (nor an
    Optuna storage); any problem with an individual run is recorded, never raised.
    """
    rows: list[dict[str, Any]] = []
    hist: list[dict[str, Any]] = []
    problems: list[Problem] = []
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise NoRunsError(f"{root}: no such file or directory")
    optuna_dbs = find_optuna_dbs(roots)
    seen: set[Path] = set()
    for root in roots:
        if root.is_file():
            if root.name.endswith(".db"):
                continue
            raise NoRunsError(f"{root}: is a file; give a run dir or a folder of runs")
        run_dirs, empty = find_run_dirs(root)
        has_db = any(Path(db).resolve().is_relative_to(root.resolve()) for db in optuna_dbs)
        if not run_dirs and not empty and not has_db:
            raise NoRunsError(f"{root}: holds no run (no metrics.json found under it)")
        for job in empty:
            problems.append(
                Problem(str(job), "empty", "no metrics.json (not started yet, or refused)")
            )
        for run_dir in run_dirs:
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            try:
                record = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
                row, rows_h = parse_record(record, str(run_dir))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                problems.append(Problem(str(run_dir), "corrupt", f"unreadable metrics.json: {exc}"))
                continue
            except (ValueError, TypeError, AttributeError) as exc:
                problems.append(Problem(str(run_dir), "corrupt", str(exc)))
                continue
            problem = _status_problem(row)
            row["usable"] = problem is None
            if problem is not None:
                problems.append(problem)
            rows.append(row)
            hist.extend(rows_h)
    runs = pd.DataFrame(rows)
    history = pd.DataFrame(hist)
    if not runs.empty:
        for col in INT_COLUMNS:
            runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("Int64")
        runs["run"] = _short_names(runs["run_dir"].tolist())
        if not history.empty:
            keys = ["run_dir", "run", "model", "encoding", "neuron", "T", "seed", "usable"]
            history = history.merge(runs[keys], on="run_dir", how="left")
    return Collection(runs, history, problems, [str(p) for p in roots], optuna_dbs)


def _short_names(run_dirs: list[str]) -> list[str]:
    """Run dirs relative to their common parent (``2026-01-01/10-00-00/3``)."""
    if len(run_dirs) == 1:
        return [Path(run_dirs[0]).name]
    common = os.path.commonpath([os.path.abspath(d) for d in run_dirs])
    return [os.path.relpath(os.path.abspath(d), common) for d in run_dirs]
