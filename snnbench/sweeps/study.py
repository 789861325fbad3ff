"""What defines a study, and how trials lost with their worker or job are retried.

A retry is a new trial with the same params that continues from the lost trial's last
checkpoint; Optuna's ``RetryHeartbeatStaleTrialCallback`` records the chain on it
(system attrs ``failed_trial`` = the first lost trial, ``retry_history`` = every one).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnbench.run.checkpoint import RESUME_FREE_KEYS, RESUME_FREE_PREFIXES
from snnbench.run.results import BEST_MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE
from snnbench.sweeps.names import ATTR_DEFINITION
from snnbench.sweeps.settings import SweepConfigError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

#: Fixed overrides that do not change what a trial computes (free to differ between the
#: processes and re-runs of one study): those a resumed run may change.
STUDY_FREE_KEYS = RESUME_FREE_KEYS
STUDY_FREE_PREFIXES = (*RESUME_FREE_PREFIXES, "hydra.")
#: What a retried trial copies from the lost trial's run dir to continue from.
RESUME_FILES = (CHECKPOINT_FILE, BEST_MODEL_FILE, METRICS_FILE)


def study_definition(fixed: Sequence[str], metric: str, direction: str) -> dict[str, Any]:
    """The settings that make trials of one study comparable: the fixed overrides (``key:
    value``, minus :data:`STUDY_FREE_KEYS` / ``_PREFIXES``), the optimized metric and the
    direction."""
    settings: dict[str, str] = {}
    for override in fixed:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key not in STUDY_FREE_KEYS and not key.startswith(STUDY_FREE_PREFIXES):
            settings[key] = value
    return {"fixed": settings, "optimized_metric": metric, "direction": direction}


def check_definition(study: optuna.Study, definition: dict[str, Any], where: str) -> None:
    """Record ``definition`` on a new study; refuse (naming the keys) one that differs."""
    old = study.user_attrs.get(ATTR_DEFINITION)
    if old is None:
        study.set_user_attr(ATTR_DEFINITION, definition)
        return
    old_fixed, new_fixed = old.get("fixed", {}), definition["fixed"]
    keys = sorted(
        k for k in set(old_fixed) | set(new_fixed) if old_fixed.get(k) != new_fixed.get(k)
    )
    keys += [k for k in ("optimized_metric", "direction") if old.get(k) != definition[k]]
    if keys:
        shown = ", ".join(
            f"{k} ({_show(definition, k)} here, {_show(old, k)} in the study)" for k in keys
        )
        raise SweepConfigError(
            f"study {study.study_name!r} in {where} was run with other settings: {shown}; use "
            "the study's settings or a new hydra.sweeper.study_name"
        )


def _show(definition: dict[str, Any], key: str) -> str:
    value = definition.get(key, definition.get("fixed", {}).get(key))
    return "unset" if value is None else str(value)


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """Numbers of the lost trials this one retries, first to last ([] for a new trial)."""
    return list(trial.system_attrs.get("retry_history", []))


def origin(trial: optuna.trial.FrozenTrial) -> int:
    """The number of the trial this one stands for: its first lost trial, or itself."""
    history = retry_history(trial)
    return history[0] if history else trial.number


def retry_callback(max_retries: int) -> Any:
    """Optuna's stale-trial callback: re-add a lost trial as WAITING with the same params,
    its intermediate values and the retry chain, at most ``max_retries`` times."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return RetryHeartbeatStaleTrialCallback(max_retry=max_retries, inherit_intermediate_values=True)


def fail_and_retry(
    study: optuna.Study, trial_id: int, error: str, max_retries: int, error_attr: str
) -> bool:
    """Mark a lost RUNNING trial FAIL (``error`` recorded) and, within ``max_retries``,
    enqueue its retry. False if another process finished the trial first."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, error_attr, error)
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False
    if max_retries > 0:
        retry_callback(max_retries)(study, storage.get_trial(trial_id))
    return True


def copy_for_resume(lost_run_dir: str | None, run_dir: Path) -> bool:
    """Copy the lost trial's checkpoint (and best weights, record) into ``run_dir``.

    True when a checkpoint was copied, so the retry continues with ``trainer.resume=true``;
    False (a fresh start) when the lost trial left none or its directory is not reachable.
    """
    if not lost_run_dir or not (Path(lost_run_dir) / RESUME_FILES[0]).is_file():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RESUME_FILES:
        src = Path(lost_run_dir) / name
        if src.is_file():
            shutil.copy2(src, run_dir / name)
    return True


def new_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """How many of ``trials`` count against the sweeper's ``max_trials``: the new ones (a
    retry stands for its lost trial), whatever their state, FAILed ones included."""
    return sum(not retry_history(t) for t in trials)


def search_finished(study: optuna.Study, max_trials: int) -> bool:
    """Whether the sweeper is done with ``study`` under ``max_trials``: that many new trials
    were asked, and none is still running or waiting to be retried. Failed trials count, as
    they do for the sweeper: a search with failures finishes."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    open_states = (TrialState.RUNNING, TrialState.WAITING)
    return new_trials(trials) >= max_trials and not any(t.state in open_states for t in trials)
