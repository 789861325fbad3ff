"""Sweeps that survive lost workers: Optuna heartbeats on PostgreSQL and SQLite, retries
that resume from the lost trial's checkpoint, and the submitit / joblib launchers.

Everything runs as real processes (sweep workers, submitit and joblib job processes, a
throwaway PostgreSQL cluster); jobs are killed with SIGKILL. Heartbeats are every 1 s with a
5 s grace period, so a lost trial is noticed within seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import ROOT, TINY, compose_cfg
from optuna.trial import TrialState
from sweeping import assert_no_secret, fresh_database, pg_url  # noqa: F401 (pg_url is a fixture)

from snnbench.run.training import run
from snnbench.sweeps.names import ATTR_JOB, ATTR_SKIPPED
from snnbench.sweeps.storage import open_storage
from snnbench.sweeps.study import origin
from snnbench.sweeps.tables import LOST_ERROR
from snnbench.sweeps.workers import worker_pid

GRACE_S = 5  # covers a heartbeat thread starved on a loaded machine
HEARTBEAT = ["hydra.sweeper.heartbeat_interval=1", f"hydra.sweeper.grace_period={GRACE_S}"]
#: Trials of 3 epochs, each long enough (~1 s) to be killed in: 2048 images, T=8.
LONG = [*TINY, "dataset.train_subset=2048", "model.num_steps=8", "trainer.epochs=3"]
LONG += ["trainer.num_threads=1", *HEARTBEAT]
FINISHED_OK = (TrialState.COMPLETE, TrialState.PRUNED)
needs_submitit = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher not installed (pip install -e .[dev])",
)


def start(*args: str) -> subprocess.Popen:
    """Start ``python -m snnbench -m ARGS`` in the repository root (output in a pipe)."""
    return subprocess.Popen(
        [sys.executable, "-m", "snnbench", "-m", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def study(storage: str, name: str = "snnbench") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def kill_a_trial_mid_run(storage: str, pids: set[int] | None = None) -> optuna.trial.FrozenTrial:
    """Wait for a RUNNING trial that has reported epoch 1 (so its checkpoint exists) and
    whose job process is in ``pids`` (any if None); SIGKILL that job process."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            running = study(storage).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the workers have not created the study yet
            running = []
        for t in running:
            pid = worker_pid(t.system_attrs.get(ATTR_JOB))
            if t.intermediate_values and pid and (pids is None or pid in pids):
                os.kill(pid, signal.SIGKILL)
                return t
        time.sleep(0.1)
    raise AssertionError("no trial reached epoch 1 in time")


def check_retry(storage: str, killed: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """The killed trial is FAIL and lost; its one retry COMPLETE, resumed from the killed
    run's checkpoint, reported only the epochs it added, ends as an uninterrupted run."""
    trials = study(storage).get_trials()
    table = "\n".join(map(describe, trials))
    lost = trials[killed.number]
    assert lost.state == TrialState.FAIL, table
    assert "error" not in lost.user_attrs  # failed by the heartbeat check, not by a pid check
    (retry,) = [t for t in trials if t.system_attrs.get("retry_history") == [killed.number]]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params, table
    record = json.loads((Path(retry.user_attrs["run_dir"]) / "metrics.json").read_text())
    assert record["status"] == "completed" and record["resumed_at_epoch"] >= 1
    assert record["resumed_at_epoch"] >= max(killed.intermediate_values)
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    assert retry.intermediate_values == {h["epoch"]: h["val_acc"] for h in record["history"]}
    assert retry.value == record["best_val_acc"]
    return retry


def same_as_uninterrupted(record: dict, tmp_path: Path) -> None:
    """The resumed run's metrics equal those of the same config trained in one go."""
    keep = [o for o in record["overrides"] if not o.startswith(("optuna.", "trainer.resume"))]
    cfg = compose_cfg([*keep, "spiking.enabled=false"], tmp_path / "uninterrupted")
    threads = torch.get_num_threads()
    try:
        assert run(cfg) == record["best_val_acc"]
    finally:  # the run sets trainer.num_threads for this process
        torch.set_num_threads(threads)
    ref = json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())
    for key in ("train_loss", "val_acc", "test_acc"):
        assert [h[key] for h in ref["history"]] == [h[key] for h in record["history"]], key


def describe(t: optuna.trial.FrozenTrial) -> str:
    """One line per trial for failure messages."""
    retry = t.system_attrs.get("retry_history")
    return (
        f"{t.number} {t.state.name} retry_of={retry} steps={sorted(t.intermediate_values)} "
        f"error={t.user_attrs.get('error')} skipped={t.system_attrs.get(ATTR_SKIPPED)}"
    )


def trials_csv(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.mark.slow
def test_three_workers_on_postgresql_finish_the_study_when_a_job_is_killed(
    tmp_path,
    pg_url,  # noqa: F811
):
    """Three sweep workers started at once on a fresh database share a study capped at
    M trials; one worker's job process is SIGKILLed mid-trial. The study still ends with
    exactly M finished trials: the lost one is failed by its missing heartbeat (no pid
    check: journal storages only) and retried, from its checkpoint, by a surviving worker."""
    url = fresh_database(pg_url, "chaos")
    secret = "chaos-pw"  # the throwaway cluster trusts every login; the URL carries it anyway
    if re.match(r"postgresql://[^:@/]+@", url):
        url = url.replace("@", f":{secret}@", 1)
    m = 4
    args = [*LONG, "hydra.sweeper.search=optuna", "neuron.beta=interval(0.5, 0.99)"]
    args += [f"hydra.sweeper.storage={url}", f"hydra.sweeper.max_trials={m}"]
    args += [f"hydra.sweeper.n_trials={m}", "hydra.sweeper.pruner.name=none"]
    workers = [
        start(*args, f"hydra.sweeper.sampler.seed={i}", f"hydra.sweep.dir={tmp_path / f'w{i}'}")
        for i in range(3)
    ]
    killed = kill_a_trial_mid_run(url, {w.pid for w in workers})
    victim = next(w for w in workers if w.pid == worker_pid(killed.system_attrs[ATTR_JOB]))
    outputs = [finish(w) for w in workers if w is not victim]
    victim.wait()
    assert victim.returncode == -signal.SIGKILL

    trials = study(url).get_trials()
    ran = [t for t in trials if ATTR_SKIPPED not in t.system_attrs]
    new = [t for t in ran if not t.system_attrs.get("retry_history")]
    done = [t for t in ran if t.state in FINISHED_OK]
    table = "\n".join(map(describe, trials))
    assert len(new) == m and len(done) == m, table  # exactly M trials, each finished once
    assert sorted(origin(t) for t in done) == [t.number for t in new]
    assert [t.number for t in ran if t.state == TrialState.FAIL] == [killed.number]
    assert all(t.state == TrialState.FAIL for t in trials if t not in ran)
    retry = check_retry(url, killed)
    record = json.loads((Path(retry.user_attrs["run_dir"]) / "metrics.json").read_text())
    same_as_uninterrupted(record, tmp_path)
    # each surviving worker writes the study's trials.csv when it ends; the one that ends
    # last (whichever ran the retry or waited for it) lists the lost trial and its retry
    tables = [
        {r["number"]: r for r in trials_csv(tmp_path / f"w{i}")}
        for i, w in enumerate(workers)
        if w is not victim
    ]
    assert all(t[str(killed.number)]["error"] == LOST_ERROR for t in tables)
    assert any(
        t.get(str(retry.number), {}).get("retried_from") == str(killed.number) for t in tables
    ), [sorted(t) for t in tables]
    assert_no_secret(tmp_path, secret, "".join(outputs))


@pytest.mark.slow
def test_joblib_workers_keep_their_trials_heartbeat(tmp_path):
    """A trial running in a joblib (loky) process gets its heartbeats from that process:
    while the job holds the trial (the sweeper beats only trials no job holds), the trial's
    heartbeat in the database keeps advancing, and the trial ends COMPLETE."""
    import sqlite3

    db = tmp_path / "optuna.db"
    proc = start(
        *LONG,
        "trainer.epochs=4",
        "hydra.sweeper.search=optuna",
        "neuron.beta=interval(0.5, 0.99)",
        "hydra.sweeper.n_trials=1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",  # n_jobs=1 would run the job in the sweep process
        f"hydra.sweep.dir={tmp_path}",
    )
    beats, job = set(), None
    while proc.poll() is None:
        try:
            (trial,) = study(f"sqlite:///{db}").get_trials()
            with sqlite3.connect(db, timeout=30) as conn:
                rows = conn.execute("SELECT heartbeat FROM trial_heartbeats").fetchall()
        except (ValueError, KeyError, sqlite3.Error, optuna.exceptions.OptunaError):
            rows, trial = [], None  # not created yet
        holder = trial.system_attrs.get(ATTR_JOB) if trial is not None else None
        if holder and rows:  # held by the job process: only it records heartbeats now
            job = worker_pid(holder)
            beats.add(rows[0][0])
        time.sleep(0.2)
    out = finish(proc)
    (trial,) = study(f"sqlite:///{db}").get_trials()
    assert trial.state == TrialState.COMPLETE, out[-3000:]
    assert job not in (None, proc.pid, os.getpid())  # a loky process held the trial
    assert len(beats) >= 2, beats  # and kept its heartbeat going
    assert trial.system_attrs[ATTR_JOB] is None  # handed back when the job ended


# ----------------------------------------------------------------------------- submitit


@needs_submitit
@pytest.mark.slow
def test_submitit_local_grid(tmp_path):
    finish(
        start(
            *TINY,
            "model=ann",
            "neuron.beta=0.5,0.9",
            "hydra/launcher=submitit_local",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    with open(tmp_path / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert (tmp_path / ".submitit").is_dir()  # the jobs ran as submitit processes


@needs_submitit
@pytest.mark.slow
def test_submitit_local_optuna_sweep_prunes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    finish(
        start(
            *TINY,
            "model=ann",
            "trainer.epochs=2",
            "trainer.num_threads=1",
            *HEARTBEAT,
            "hydra.sweeper.search=optuna",
            "optimizer.lr=choice(1e-9, 0.01)",
            "hydra.sweeper.sampler.seed=9",  # draws 0.01, 1e-9, 0.01
            "hydra.sweeper.pruner.name=threshold",
            "hydra.sweeper.pruner.lower=0.2",  # lr 1e-9 stays at chance: pruned after epoch 1
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=3",
            "hydra/launcher=submitit_local",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    trials = study(storage).get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    for t in trials:
        record = json.loads((tmp_path / str(t.number) / "metrics.json").read_text())
        assert record["config"]["optuna"]["trial"] == t.number
        assert t.intermediate_values == {h["epoch"]: h["val_acc"] for h in record["history"]}
        if t.state == TrialState.COMPLETE:
            assert record["status"] == "completed" and record["epochs_completed"] == 2
            assert record["best_val_acc"] == t.value and record["spiking"] is not None
        else:
            assert record["status"] == "pruned" and record["epochs_completed"] == 1
            assert "TrialPruned" in record["error"]
    rows = trials_csv(tmp_path)
    assert [(r["number"], r["state"]) for r in rows] == [
        (str(t.number), t.state.name) for t in trials
    ]
    assert [r["value"] for r in rows] == ["" if t.value is None else str(t.value) for t in trials]


@needs_submitit
@pytest.mark.slow
def test_submitit_local_job_killed_by_the_os_is_retried(tmp_path):
    """SIGKILL one submitit job of a batch: submitit loses the batch's results, the sweep
    waits for the other job, the killed trial goes stale, and its retry resumes it."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = start(
        *LONG,
        "hydra.sweeper.search=optuna",
        "neuron.beta=interval(0.5, 0.99)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner.name=none",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={tmp_path}",
    )
    killed = kill_a_trial_mid_run(storage)
    assert worker_pid(killed.system_attrs[ATTR_JOB]) != proc.pid  # a job process, not the sweep
    finish(proc)
    check_retry(storage, killed)
    trials = study(storage).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2 and len(trials) == 3


RACE = """
import sys, time
from snnbench.sweeps.storage import open_storage
while time.time() < float(sys.argv[2]):
    pass
open_storage("sqlite:///" + sys.argv[1])
"""


def test_workers_opening_a_fresh_sqlite_storage_together_all_open_it(tmp_path):
    """Search workers started at the same moment on one new ``optuna.db`` race to create its
    tables (SQLite answers the loser with ``table ... already exists``): every one of them
    opens the storage, on each of several fresh databases."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for n in range(3):
        db = tmp_path / f"race{n}" / "optuna.db"
        db.parent.mkdir()
        start = time.time() + 3.0  # all wait for the same instant, imports done
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(db), str(start)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors


POP = """
import sys, time
import optuna
from snnbench.sweeps.storage import open_storage
study = optuna.load_study(study_name="race", storage=open_storage("sqlite:///" + sys.argv[1]))
while time.time() < float(sys.argv[2]):
    pass
print(study.ask().number)
"""


def test_workers_asking_together_never_take_the_same_waiting_trial(tmp_path):
    """A waiting trial (a retry of a lost one) is taken by exactly one of the search workers
    that ask for a trial at the same moment on one SQLite storage; the others get new
    trials (each trial number is handed out once)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for n in range(3):
        db = tmp_path / f"pop{n}.db"
        study = optuna.create_study(study_name="race", storage=open_storage(f"sqlite:///{db}"))
        study.enqueue_trial({"x": 1.0})
        start = time.time() + 3.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", POP, str(db), str(start)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, outs
        numbers = sorted(int(out) for out, _ in outs)
        assert numbers == [0, 1, 2, 3], numbers


@pytest.mark.slow
def test_study_search_as_two_workers_on_a_postgresql_storage(tmp_path, pg_url):  # noqa: F811
    """``python -m snnbench.study --storage postgresql://... --search-workers 2``: the quick
    plan's ANN search runs as two local sweep processes on the one PostgreSQL study (no
    ``optuna.db`` in its folder), with the plan's trial count between them; the runner then
    finds the search done there."""
    from snnbench.studies import runner as study
    from snnbench.studies.plan import load_plan

    url = fresh_database(pg_url, "studystorage")
    quick = load_plan("quick")
    plan = dataclasses.replace(quick, parts=(quick.part("search_ann"),))
    root = tmp_path / "results"
    assert study.run_study(root, plan, ["search_ann"], 1, search_workers=2, storage=url) == 0
    search = plan.part("search_ann").search
    assert not (root / search.path / "optuna.db").exists()
    trials = study.load_search(root / search.path, search.study, url).get_trials()
    ran = [t for t in trials if ATTR_SKIPPED not in t.system_attrs]
    assert [t.state for t in ran] == [TrialState.COMPLETE] * search.n_trials, trials
    assert study.search_done(root / search.path, search.study, search.n_trials, url)
