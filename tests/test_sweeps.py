"""Sweeps: grid multirun summary, the Optuna sweeper plugin (SQLite, journal, PostgreSQL),
resume, pruning, failure isolation, the study-wide trial cap, the study's definition and
dead-worker recovery on one host (journal storages).

Sweeps run as real ``python -m snnbench -m ...`` subprocesses on a few hundred images.
Lost workers across hosts (heartbeats) and cluster launchers: tests/test_sweeps_scale_out.py.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, TINY
from optuna.trial import TrialState
from sweeping import assert_no_secret, pg_url  # noqa: F401 (pg_url is a fixture)

from snnbench.run.credentials import URLS_ENV
from snnbench.sweeps.names import ATTR_SKIPPED
from snnbench.sweeps.settings import SweepConfigError
from snnbench.sweeps.space import search_space
from snnbench.sweeps.storage import (
    job_storage_spec,
    open_storage,
    redact,
    resolve_storage,
)

FAST = [*TINY, "model.num_steps=2", "trainer.num_threads=1"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def sweep(*args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python -m snnbench -m ARGS`` (tiny data) in the repository root."""
    proc = subprocess.run(
        [sys.executable, "-m", "snnbench", "-m", *FAST, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def load(storage: str, name: str = "snnbench") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- units


def test_search_space_follows_hydra_grammar():
    dists, fixed = search_space(
        {
            "model.num_steps": "range(2, 11, step=4)",
            "neuron.beta": "interval(0.5, 0.99)",
            "optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
            "encoding.name": "choice(rate, latency)",
            "trainer.seed": "int(interval(0, 9))",
            "trainer.epochs": "3",
        }
    )
    T = dists["model.num_steps"]
    assert (T.low, T.high, T.step) == (2, 10, 4)  # Hydra's range excludes the stop: 2, 6, 10
    assert (dists["neuron.beta"].low, dists["neuron.beta"].high) == (0.5, 0.99)
    assert dists["optimizer.lr"].log and not dists["neuron.beta"].log
    assert dists["encoding.name"].choices == ("rate", "latency")
    assert type(dists["trainer.seed"]).__name__ == "IntDistribution"
    assert fixed == ["trainer.epochs=3"]
    for bad in ("interval(1, 0.5)", "tag(log, interval(0, 1))", "range(5, 5)"):
        with pytest.raises(SweepConfigError, match="neuron.beta"):
            search_space({"neuron.beta": bad})


def test_jobs_get_the_password_from_the_environment_only(monkeypatch):
    full, shown = "postgresql://u:pw@h/db", "postgresql://u:***@h/db"
    monkeypatch.setenv(URLS_ENV, json.dumps({shown: full}))
    assert job_storage_spec(shown) == full
    assert job_storage_spec("sqlite:///x.db") == "sqlite:///x.db"  # another storage: as given
    monkeypatch.delenv(URLS_ENV)
    with pytest.raises(RuntimeError, match=URLS_ENV):
        job_storage_spec(shown)


def test_storage_specs(tmp_path):
    assert resolve_storage(None, "multirun/x", tmp_path) == (
        f"sqlite:///{tmp_path / 'multirun/x/optuna.db'}"
    )
    assert resolve_storage("s.db", "d", tmp_path) == f"sqlite:///{tmp_path / 's.db'}"
    assert resolve_storage("journal:j.log", "d", tmp_path) == f"journal:{tmp_path / 'j.log'}"
    assert resolve_storage("postgresql://u@h/db", "d", tmp_path) == "postgresql://u@h/db"
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db?password=secret&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert redact("optuna.storage='mysql://h/db?a=1&PASSWORD=secret'") == (
        "optuna.storage='mysql://h/db?PASSWORD=***&a=1'"  # SQLAlchemy sorts the query
    )
    with pytest.raises(SweepConfigError, match="hydra.sweeper.storage"):
        resolve_storage("study.txt", "d", tmp_path)


# ----------------------------------------------------------------------------- grid


def test_grid_multirun_runs_all_jobs_and_writes_summary(tmp_path):
    proc = sweep("neuron.beta=0.5,2.0", f"hydra.sweep.dir={tmp_path}", check=False)
    assert proc.returncode == 1  # a job failed: clear non-zero exit, after all jobs ran
    assert "1 of 2 jobs failed" in proc.stderr and "neuron.beta=2.0" in proc.stderr
    rows = read_csv(tmp_path / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1"]
    ok, bad = rows
    assert ok["status"] == "completed" and "neuron.beta=0.5" in ok["overrides"]
    record = json.loads((tmp_path / "0" / "metrics.json").read_text())
    assert float(ok["best_val_acc"]) == record["best_val_acc"]
    assert float(ok["test_acc"]) == record["test_acc"] and ok["epochs_completed"] == "1"
    assert bad["status"] == "failed" and "neuron.beta=2.0" in bad["overrides"]
    assert bad["error"].startswith("ConfigError: neuron.beta=2.0")
    assert not (tmp_path / "1" / "metrics.json").exists()


# ----------------------------------------------------------------------------- optuna


def test_optuna_sqlite_sweep_resumes_without_duplicates(tmp_path):
    args = ["hparams_search=optuna", "model.num_steps=range(2, 5, step=2)"]
    args += ["hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}"]
    sweep(*args)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = load(storage).get_trials()
    assert [t.number for t in first] == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in first)
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(t.value for t in first)
    assert set(results["best_params"]) == {"model.num_steps", "neuron.beta", "optimizer.lr"}
    for t in first:  # the value told is the job's best validation accuracy
        record = json.loads((tmp_path / str(t.number) / "metrics.json").read_text())
        assert record["best_val_acc"] == t.value and record["status"] == "completed"
        assert record["num_steps"] == t.params["model.num_steps"]
        assert t.intermediate_values == {1: record["history"][0]["val_acc"]}

    sweep(*args)  # same storage + study name: the study continues
    trials = load(storage).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.params for t in trials[:2]] == [t.params for t in first]
    params = {tuple(sorted(t.params.items())) for t in trials}
    assert len(params) == 4  # the seeded sampler did not replay the first run's draws
    rows = read_csv(tmp_path / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert {"state", "value", "params.neuron.beta", "duration_s"} <= set(rows[0])
    for t in trials:  # each trial kept its own run dir (trial number, not Hydra's job num)
        record = json.loads((tmp_path / str(t.number) / "metrics.json").read_text())
        assert record["config"]["optuna"]["trial"] == t.number


def test_resuming_a_study_with_other_settings_is_refused(tmp_path):
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}"]
    sweep(*args)
    proc = sweep(*args, "trainer.epochs=2", "optimized_metric=final_val_acc", check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("snnbench: error: study 'snnbench' in sqlite:///")
    assert "trainer.epochs (2 here, 1 in the study)" in line
    assert "optimized_metric (final_val_acc here, best_val_acc in the study)" in line
    assert len(load(f"sqlite:///{tmp_path / 'optuna.db'}").get_trials()) == 1
    sweep(*args, "trainer.progress=true")  # settings that do not change a trial are free


def test_optuna_prunes_and_survives_failing_trials(tmp_path):
    # neuron.beta=2.0 is refused by the job; the threshold pruner prunes every other trial
    sweep(
        "hydra.sweeper.search=optuna",
        "neuron.beta=choice(0.5, 2.0)",
        "hydra.sweeper.sampler.seed=8",  # draws 2.0, 0.5, 0.5
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner.name=threshold",
        "hydra.sweeper.pruner.lower=0.99",
        f"hydra.sweep.dir={tmp_path}",
    )
    trials = load(f"sqlite:///{tmp_path / 'optuna.db'}").get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 3 and states.count(TrialState.FAIL) == 1
    assert states.count(TrialState.PRUNED) == 2
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.params["neuron.beta"] == 2.0
            assert t.user_attrs["error"].startswith("ConfigError: neuron.beta=2.0")
        else:
            record = json.loads((tmp_path / str(t.number) / "metrics.json").read_text())
            assert record["status"] == "pruned" and "TrialPruned" in record["error"]
            assert t.intermediate_values[1] == record["history"][0]["val_acc"]
    assert states.index(TrialState.FAIL) < 2  # the sweep went on after the failed trial
    rows = read_csv(tmp_path / "trials.csv")
    assert [r["state"] for r in rows] == [s.name for s in states]
    assert (
        yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["best_value"] is None
    )  # no COMPLETE trial


def test_optuna_stops_past_max_failure_rate(tmp_path):
    proc = sweep(
        "hydra.sweeper.search=optuna",
        "neuron.beta=choice(2.0, 3.0)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.25",
        f"hydra.sweep.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 1 and "max_failure_rate=0.25" in proc.stderr
    trials = load(f"sqlite:///{tmp_path / 'optuna.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]  # 2 > 0.25 x 4


def test_plain_value_on_the_command_line_fixes_a_searched_key(tmp_path):
    sweep(
        "hparams_search=optuna",
        "neuron.beta=0.9",  # searched by hparams_search=optuna: now fixed for every trial
        "model.num_steps=3",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    (trial,) = load(f"sqlite:///{tmp_path / 'optuna.db'}").get_trials()
    assert set(trial.params) == {"optimizer.lr"}
    config = json.loads((tmp_path / "0" / "metrics.json").read_text())["config"]
    assert config["neuron"]["beta"] == 0.9 and config["model"]["num_steps"] == 3
    results = (tmp_path / "optimization_results.yaml").read_text()
    assert "metric: best_val_acc" in results


def test_bad_sweeper_setting_is_one_line_error(tmp_path):
    proc = sweep(
        "hparams_search=optuna",
        "hydra.sweeper.sampler.name=grid",
        f"hydra.sweep.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "snnbench: error: hydra.sweeper.sampler.name='grid' is not allowed; choose one of "
        "tpe, random"
    ]
    assert not (tmp_path / "0").exists()


@pytest.mark.slow
def test_two_processes_on_one_journal_finish_exactly_max_trials(tmp_path):
    """Two sweep processes (one of them parallel via joblib) share a journal study."""
    journal = tmp_path / "study.log"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snnbench",
                "-m",
                *FAST,
                "hparams_search=optuna",
                f"hydra.sweeper.storage=journal:{journal}",
                "hydra.sweeper.n_trials=3",
                "hydra.sweeper.max_trials=3",
                f"hydra.sweep.dir={tmp_path / f'w{i}'}",
                # the first worker runs 2 trials at a time in joblib (loky) processes
                *(
                    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
                    if i == 0
                    else []
                ),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    trials = load(f"journal:{journal}").get_trials()
    ran = [t for t in trials if ATTR_SKIPPED not in t.system_attrs]
    assert sorted(t.number for t in ran) == [0, 1, 2]
    assert all(t.state in FINISHED for t in ran)
    assert all(t.state == TrialState.FAIL and t.number >= 3 for t in trials if t not in ran)
    status = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned"}
    for t in ran:  # each trial ran once, in the run dir of the process that asked for it
        record = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert record["status"] == status.get(t.state, "failed")
        assert record["config"]["optuna"]["trial"] == t.number


@pytest.mark.slow
def test_killed_sweep_on_a_journal_retries_its_trial_from_the_checkpoint(tmp_path):
    """Journal storages have no heartbeats: the same-host process check finds the trial of
    a killed sweep, and its retry continues from the lost run's checkpoint."""
    storage = f"journal:{tmp_path / 'study.log'}"
    search = ["hparams_search=optuna", "model.num_steps=range(30, 51, step=10)"]
    # a trial long enough (T >= 30, 3 epochs) to be killed while it trains
    search += ["trainer.epochs=3", f"hydra.sweeper.storage={storage}"]
    args = [sys.executable, "-m", "snnbench", "-m", *FAST, *search]
    args += ["hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until epoch 1 is recorded (and checkpointed)
        try:
            if json.loads((tmp_path / "0" / "metrics.json").read_text())["epochs_completed"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (killed,) = load(storage).get_trials()
    assert killed.state == TrialState.RUNNING
    done = json.loads((tmp_path / "0" / "metrics.json").read_text())["epochs_completed"]
    assert 1 <= done < 3

    sweep(*search, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}")
    trials = load(storage).get_trials()
    assert [t.number for t in trials] == [0, 1, 2]  # the retry, then this run's new trial
    assert trials[0].state == TrialState.FAIL and "died" in trials[0].user_attrs["error"]
    retry = trials[1]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert retry.system_attrs["retry_history"] == [0]
    record = json.loads((tmp_path / "1" / "metrics.json").read_text())
    assert record["resumed_at_epoch"] >= done and record["epochs_completed"] == 3
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    assert retry.intermediate_values == {h["epoch"]: h["val_acc"] for h in record["history"]}
    assert trials[2].state == TrialState.COMPLETE and trials[2].params != trials[0].params
    rows = read_csv(tmp_path / "trials.csv")
    assert [r["retried_from"] for r in rows] == ["", "0", ""]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["retries"] == {1: [0]}
    assert results["this_run"] == {  # one new trial and the retry of the killed one
        "trials": 1,
        "retries": 1,
        "complete": 2,
        "pruned": 0,
        "fail": 0,
        "lost": 0,
    }


# ----------------------------------------------------------------------------- PostgreSQL


def test_postgresql_sweep_keeps_the_password_out_of_records(tmp_path, pg_url):  # noqa: F811
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install -e .[postgres])")
    name = f"pgtest-{os.getpid()}-{time.time_ns()}"
    secret = "s3cret-pw"  # the throwaway cluster trusts every login; the URL carries it anyway
    with_pw = f"{pg_url}{'&' if '?' in pg_url else '?'}password={secret}"
    proc = sweep(
        "hparams_search=optuna",
        f"hydra.sweeper.storage='{with_pw}'",  # quoted: '=' in a value
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner.name=none",
        f"hydra.sweep.dir={tmp_path}",
    )
    trials = load(pg_url, name).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(t.intermediate_values == {1: t.value} for t in trials)  # reported through PG
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["storage"] == redact(with_pw) and secret not in results["storage"]
    assert results["best_value"] == max(t.value for t in trials)
    assert not (tmp_path / "optuna.db").exists()
    assert_no_secret(tmp_path, secret, proc.stdout + proc.stderr)
    record = json.loads((tmp_path / "0" / "metrics.json").read_text())
    assert record["config"]["optuna"]["storage"] == redact(with_pw)
