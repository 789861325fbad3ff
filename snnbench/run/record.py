"""The run record (``metrics.json``): what it holds when a run starts, after each epoch, and
the value a run returns to a sweeper."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from snnbench.config import is_spiking
from snnbench.dataio import data as data_mod
from snnbench.run.results import METRICS_FILE, SCHEMA_VERSION, read_json, versions

log = logging.getLogger("snnbench")


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cli_overrides() -> list[str]:
    """The run's command-line overrides (empty outside Hydra: tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def new_record(cfg: DictConfig, splits: data_mod.DataSplits, device: torch.device) -> dict:
    """The record of a run that is starting (``status: running``, no epoch yet)."""
    spiking = is_spiking(cfg)
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "model": cfg.model.name,
        "encoding": cfg.encoding.name if spiking else None,
        "neuron": cfg.neuron.name if spiking else None,
        "num_steps": cfg.model.num_steps,
        "epochs": cfg.trainer.epochs,
        "epochs_completed": 0,
        "best_val_acc": None,
        "best_epoch": None,
        "test_acc": None,
        "final_test_acc": None,
        "train_time_s": 0.0,
        "history": [],
        "n_params": None,
        "device": str(device),
        "data": {
            "source": splits.source,
            "n_train": len(splits.train),
            "n_val": len(splits.val),
            "n_test": len(splits.test),
        },
        "started_at": now(),
        "finished_at": None,
        "error": None,
        "versions": versions(),
        "overrides": cli_overrides(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "sessions": [],
    }
    record["sessions"] = [session_of(record)]
    return record


#: What a record says of each session (process) that worked on the run.
SESSION_KEYS = ("started_at", "overrides", "device", "versions", "data")


def session_of(record: dict[str, Any]) -> dict[str, Any]:
    """The session entry of a record's own top-level fields."""
    return {k: record.get(k) for k in SESSION_KEYS}


def continue_record(record: dict[str, Any], earlier: dict[str, Any], epoch: int) -> None:
    """Make ``record`` (this session's new record) continue ``earlier`` (the checkpoint's,
    written after ``epoch``): the earlier history and results, the first session's
    ``started_at``, and every session so far plus this one in ``sessions``. The top-level
    ``overrides``, ``device``, ``versions`` and ``data`` (where it was found) are this
    session's."""
    this = session_of(record)
    sessions = list(earlier.get("sessions") or [session_of(earlier)])
    record.update(earlier)
    record.update({k: this[k] for k in SESSION_KEYS if k != "started_at"})
    record["started_at"] = sessions[0].get("started_at") or this["started_at"]
    record["sessions"] = [*sessions, {**this, "resumed_at_epoch": epoch}]
    record["status"] = "running"
    record["resumed_at_epoch"] = epoch


def add_epoch(record: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Append an epoch's history entry; return True when its validation accuracy is the
    best so far (strictly higher: the earliest epoch wins a tie)."""
    record["history"].append(entry)
    record["epochs_completed"] = entry["epoch"]
    record["train_time_s"] = sum(h["time_s"] for h in record["history"])
    if record["best_val_acc"] is None or entry["val_acc"] > record["best_val_acc"]:
        record["best_val_acc"] = entry["val_acc"]
        record["best_epoch"] = entry["epoch"]
        return True
    return False


def objective(cfg: DictConfig, record: dict[str, Any]) -> float:
    """The value returned to a sweeper: ``cfg.optimized_metric`` of a finished record."""
    if cfg.get("optimized_metric", "best_val_acc") == "final_val_acc":
        return float(record["history"][-1]["val_acc"])
    return float(record["best_val_acc"])


def finished_record(run_dir: Path, ckpt_epoch: int, epochs: int) -> dict[str, Any] | None:
    """The run's metrics.json if it says ``completed`` after ``epochs`` epochs, else None."""
    if ckpt_epoch < epochs:
        return None
    try:
        record = read_json(run_dir / METRICS_FILE)
    except (OSError, ValueError):
        return None
    done = record.get("status") == "completed" and record.get("epochs_completed") == epochs
    return record if done else None


def end_status(exc: BaseException) -> str:
    """``status`` of a run that ended with ``exc``: pruned, interrupted (Ctrl-C) or failed."""
    if type(exc).__name__ == "TrialPruned":
        return "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"
