"""snnbench on a live SLURM cluster (tests/slurm_cluster.py): the cluster itself, sweeps
through ``hydra/launcher=slurm``, and faults (scancel, time limit, node failure, two writers).

The cluster is one node on this machine with the test timings of slurm_cluster.py
(KillWait 5 s, requeued jobs may start again after 10 s). Without root or the Slurm packages
every test here skips, saying which.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, TINY, compose_cfg
from optuna.trial import TrialState
from slurm_cluster import SlurmCluster, cluster, slurm  # noqa: F401 (slurm is a fixture)
from sweeping import assert_no_secret, pg_url  # noqa: F401 (pg_url is a fixture)

from snnbench.sweeps.storage import open_storage
from snnbench.training import run

THREADS = ["trainer.num_threads=1"]
#: Every job: tiny, one CPU thread, 1 CPU and 1 GB from SLURM, a 5 min limit.
JOB = [
    *TINY,
    *THREADS,
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=5",
]


def summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def trials_csv(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def fresh_database(url: str) -> str:
    """A new, empty database on the test PostgreSQL cluster."""
    psycopg2 = pytest.importorskip("psycopg2")
    from sqlalchemy.engine import make_url

    name = f"slurm_{os.getpid()}_{time.time_ns() % 10**9}"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def test_cluster_runs_a_batch_job_with_accounting(slurm: SlurmCluster, tmp_path):  # noqa: F811
    out = tmp_path / "job.out"
    job = slurm.cmd(
        "sbatch", "--parsable", "-o", str(out), "--wrap", "echo $SLURM_JOB_ID $SLURM_CONF"
    ).strip()
    slurm.wait_for("the job COMPLETED in sacct", lambda: "COMPLETED" in slurm.acct_states(job))
    assert out.read_text().split() == [job, str(slurm.conf)]
    slurm.wait_idle()


def test_cluster_tear_down_leaves_no_daemon_and_no_file():
    """A second cluster started and stopped beside the session's: afterwards none of its
    processes runs and its folder is gone."""
    old_conf = os.environ.get("SLURM_CONF")
    gen = cluster()
    c = next(gen)
    pids = [int(p.read_text()) for p in (c.base / "run").glob("*.pid")]
    pids.append(int((c.base / "munge" / "munged.pid").read_text()))
    assert len(pids) == 5  # slurmctld, slurmd, slurmdbd, mariadbd, munged
    for _ in gen:  # tear down
        pass
    assert os.environ.get("SLURM_CONF") == old_conf
    assert not c.base.exists()
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", pid


# ----------------------------------------------------------------------------- sweeps


def sweep(*args: str, check: bool = True, timeout: float = 300) -> str:
    """``python -m snnbench -m ARGS hydra/launcher=slurm`` with tiny jobs (1 CPU, 1 GB);
    its output. ``$SLURM_CONF`` (set by the fixture) is inherited by sbatch and the jobs."""
    proc = subprocess.run(
        [sys.executable, "-m", "snnbench", "-m", *JOB, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, out[-4000:]
    return out


def test_grid_sweep_runs_as_a_slurm_array(slurm: SlurmCluster, tmp_path):  # noqa: F811
    """Two grid points become two tasks of one SLURM array; summary.csv and the records are
    those of the same runs made locally."""
    sweep("model=ann", "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={tmp_path}")
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "completed"], rows
    (submission,) = (tmp_path / ".submitit").glob("*/*_submission.sh")
    text = submission.read_text()
    for line in ("--array=0-1%2", "--cpus-per-task=1", "--time=5", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in text, text
    array = submission.parent.name
    slurm.wait_for(  # the accounting lags the job's result file a little
        "both tasks COMPLETED in sacct", lambda: slurm.acct_states(array) == ["COMPLETED"] * 2
    )
    for i, lr in enumerate(("0.01", "0.02")):
        record = json.loads((tmp_path / str(i) / "metrics.json").read_text())
        assert record["status"] == "completed"
        assert float(rows[i]["best_val_acc"]) == record["best_val_acc"]
        local = run(
            compose_cfg(
                [*TINY, *THREADS, "model=ann", f"optimizer.lr={lr}"], tmp_path / f"local{i}"
            )
        )
        assert local == record["best_val_acc"]
    slurm.wait_idle()


def test_optuna_sweep_on_slurm_with_postgresql(slurm: SlurmCluster, tmp_path, pg_url):  # noqa: F811
    """An Optuna sweep whose trials are SLURM jobs, on PostgreSQL with a password: the study,
    trials.csv and the records agree; the password reaches the jobs through the environment
    and is in no file of the sweep (submitit's pickles and scripts included) nor its output."""
    url = fresh_database(pg_url)
    secret = "slurm-pw-4711"
    url = url.replace("@", f":{secret}@", 1)
    out = sweep(
        "model=ann",
        "hydra.sweeper.search=optuna",
        "optimizer.lr=interval(0.001, 0.05)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweep.dir={tmp_path}",
    )
    trials = optuna.load_study(study_name="snnbench", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    rows = {r["number"]: r for r in trials_csv(tmp_path)}
    for t in trials:
        record = json.loads((tmp_path / str(t.number) / "metrics.json").read_text())
        assert record["status"] == "completed" and record["best_val_acc"] == t.value
        assert t.intermediate_values == {h["epoch"]: h["val_acc"] for h in record["history"]}
        assert rows[str(t.number)]["state"] == "COMPLETE"
        assert float(rows[str(t.number)]["value"]) == t.value
    assert len(list((tmp_path / ".submitit").glob("*/*_result.pkl"))) == 2
    assert_no_secret(tmp_path, secret, out)
    slurm.wait_idle()
