"""The job side of an Optuna trial: claim the trial, keep its heartbeat, report epochs, prune.

A job of the Optuna sweeper has ``optuna.trial`` set in its config. :func:`optuna_trial_job`
opens the study from the job's own storage object (another process, maybe another host),
records this process on the trial, keeps the trial's heartbeat going every
``heartbeat_interval`` s while the run trains (database storages), and yields the run's
``on_epoch`` callback; when the run ends the heartbeat stops and the trial is handed back
to the sweeper, which tells its outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from snnbench.run.run_folder import worker_id
from snnbench.sweeps.names import ATTR_HEARTBEAT, ATTR_JOB, ATTR_PRUNER
from snnbench.sweeps.samplers import build_pruner
from snnbench.sweeps.storage import job_storage_spec, open_storage

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, Any]], None]

_JOB_STORAGES: dict[str, Any] = {}  # one per storage and process (joblib reuses processes)
_ACTIVE: set[JobTrial] = set()  # the trials this process runs now


class JobTrial:
    """The live Optuna trial a job runs, with its heartbeat thread."""

    def __init__(self, storage_spec: str, study_name: str, number: int) -> None:
        import optuna

        if storage_spec not in _JOB_STORAGES:
            _JOB_STORAGES[storage_spec] = open_storage(storage_spec)
        self.storage = _JOB_STORAGES[storage_spec]
        study = optuna.load_study(study_name=study_name, storage=self.storage)
        self.number = number
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            study._study_id, number
        )
        frozen = self.storage.get_trial(self.trial_id)
        if frozen.state.is_finished():
            raise RuntimeError(f"trial {number} is already {frozen.state.name}")
        self.storage.set_trial_system_attr(self.trial_id, ATTR_JOB, worker_id())
        study.pruner = build_pruner(frozen.system_attrs.get(ATTR_PRUNER))
        self.trial = optuna.trial.Trial(study, self.trial_id)
        self.reported = set(frozen.intermediate_values)  # inherited by a retry
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        interval = frozen.system_attrs.get(ATTR_HEARTBEAT)
        if interval and hasattr(self.storage, "record_heartbeat"):
            self.storage.record_heartbeat(self.trial_id)
            self._beat = threading.Thread(
                target=self._heartbeat, args=(float(interval),), daemon=True
            )
            self._beat.start()
        _ACTIVE.add(self)

    def _heartbeat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # a database hiccup: the next beat may get through
                log.warning("trial %d: heartbeat not recorded: %s", self.number, exc)

    def on_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Report every epoch of ``record["history"]`` not yet on the trial (a resumed retry
        reports only the epochs it adds), then prune if the pruner says so."""
        import optuna

        for entry in record["history"]:
            if entry["epoch"] not in self.reported:
                self.trial.report(float(entry["val_acc"]), entry["epoch"])
                self.reported.add(entry["epoch"])
        if self.trial.should_prune():
            val_acc = record["history"][-1]["val_acc"]
            raise optuna.TrialPruned(
                f"trial {self.number} pruned after epoch {epoch} (val_acc {val_acc:.4f})"
            )

    def close(self) -> None:
        """Stop the heartbeat and hand the trial back to the sweeper (it tells the outcome)."""
        _ACTIVE.discard(self)
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            self.storage.set_trial_system_attr(self.trial_id, ATTR_JOB, None)
        except Exception:  # already finished (e.g. failed as stale): nothing to hand back
            pass


def release_all() -> None:
    """Hand back every trial this process runs (a job about to end abruptly: requeued by
    SLURM, it keeps the trial, whose heartbeat the sweeper keeps while it waits)."""
    for job in list(_ACTIVE):
        job.close()


@contextmanager
def optuna_trial_job(optuna_cfg: Mapping[str, Any] | None) -> Iterator[EpochCallback | None]:
    """The ``on_epoch`` for the job's trial (None when the job is not an Optuna trial)."""
    if not optuna_cfg or optuna_cfg.get("trial") is None:
        yield None
        return
    spec = job_storage_spec(str(optuna_cfg["storage"]))
    job = JobTrial(spec, str(optuna_cfg["study_name"]), int(optuna_cfg["trial"]))
    try:
        yield job.on_epoch
    finally:
        job.close()
