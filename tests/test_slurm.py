"""snnbench on a live SLURM cluster (tests/slurm_cluster.py): the cluster itself, sweeps
through ``hydra/launcher=slurm``, and faults (scancel, time limit, node failure, two writers).

The cluster is one node on this machine with the test timings of slurm_cluster.py
(KillWait 2 s, requeued jobs may start again after 5 s). Without root or the Slurm packages
every test here skips, saying which.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from conftest import ROOT, TINY, compose_cfg
from optuna.trial import TrialState
from slurm_cluster import SlurmCluster, cluster, slurm  # noqa: F401 (slurm is a fixture)
from sweeping import assert_no_secret, fresh_database, pg_url  # noqa: F401 (pg_url is a fixture)

from snnbench.run.training import run
from snnbench.studies import runner as study
from snnbench.studies.executors import SlurmExecutor, make_executor
from snnbench.studies.plan import load_plan, part_items
from snnbench.sweeps.names import ATTR_SKIPPED, ATTR_WORKER
from snnbench.sweeps.storage import open_storage

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
    url = fresh_database(pg_url, "slurm")
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


# ----------------------------------------------------------------------------- faults

#: Heartbeats every 1 s, a trial silent for 5 s is lost (the Optuna fault tests).
HEARTBEAT = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=5"]
#: Runs long enough to be hit mid-way: 2048 images, T=8 (0.4-1 s an epoch here).
LONG = ["dataset.train_subset=2048", "model.num_steps=8", "spiking.enabled=false"]
#: Epochs of a run hit after its first: the rest outlasts KillWait (2 s) many times over, so
#: the job is killed mid-run rather than finishing while it is being stopped (12 epochs did
#: finish once on a quiet machine, at 0.4 s an epoch).
OUTLAST = 40


def start_sweep(*args: str) -> subprocess.Popen:
    """:func:`sweep` in the background (output in a pipe)."""
    return subprocess.Popen(
        [sys.executable, "-m", "snnbench", "-m", *JOB, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def running_task(c: SlurmCluster, index: int = 0) -> str:
    """The job id of the sweep's running task ``index``: ``ARRAY_INDEX``, or the plain id of
    a batch of one (submitit submits that as a plain job)."""
    for job in c.jobs():
        plain = "_" not in job["id"] and index == 0
        if job["state"] == "RUNNING" and (job["id"].endswith(f"_{index}") or plain):
            return job["id"]
    raise AssertionError(f"no running task {index}: {c.jobs()}")


def wait_epoch(c: SlurmCluster, run_dir: Path, epoch: int, proc: subprocess.Popen) -> None:
    def reached() -> bool:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        return (record(run_dir).get("epochs_completed") or 0) >= epoch

    c.wait_for(f"epoch {epoch} in {run_dir}", reached, 240, 0.1)


@pytest.mark.slow
def test_grid_sweep_that_loses_a_job_records_only_that_one_failed(
    slurm: SlurmCluster,  # noqa: F811
    tmp_path,
):
    """One job of a two-job array is cancelled (scancel) mid-run: the other completes and is
    recorded so; only the cancelled one is failed, with SLURM's state as its error. (The
    stock submitit launcher loses the whole batch: both were recorded failed.)"""
    proc = start_sweep("trainer.epochs=1,200", f"hydra.sweep.dir={tmp_path}")
    wait_epoch(slurm, tmp_path / "1", 1, proc)
    slurm.cmd("scancel", running_task(slurm, 1))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]  # a grid sweep with a failed job ends so
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "failed"], rows
    assert float(rows[0]["best_val_acc"]) == record(tmp_path / "0")["best_val_acc"]
    assert "CANCELLED" in rows[1]["error"] and "JobLost" in rows[1]["error"], rows[1]
    assert rows[1]["run_dir"] == str(tmp_path / "1") and rows[1]["epochs_completed"]
    assert "1 of 2 jobs failed" in out
    slurm.wait_idle()


@pytest.mark.slow
def test_optuna_trial_cancelled_mid_run_is_retried_from_its_checkpoint(
    slurm: SlurmCluster,  # noqa: F811
    tmp_path,
):
    """scancel the job of a running trial: SLURM sends SIGTERM (submitit ignores it) and
    SIGKILL after KillWait; the trial's heartbeat stops, it is failed as lost and retried in
    a new job that continues from the checkpoint the killed job left (at most the epoch in
    progress is lost); the study ends with the config trained once, completely."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = start_sweep(
        *LONG,
        *HEARTBEAT,
        f"trainer.epochs={OUTLAST}",
        "hydra.sweeper.search=optuna",
        "neuron.beta=interval(0.5, 0.99)",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.pruner.name=none",
        f"hydra.sweep.dir={tmp_path}",
    )
    wait_epoch(slurm, tmp_path / "0", 1, proc)
    slurm.cmd("scancel", running_task(slurm))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name="snnbench", storage=open_storage(storage)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], out[-3000:]
    lost, retry = trials
    assert retry.system_attrs["retry_history"] == [0] and retry.params == lost.params
    killed = record(tmp_path / "0")  # as the killed job left it
    assert killed["status"] == "running" and killed["epochs_completed"] >= 1
    done = record(tmp_path / "1")
    assert done["status"] == "completed" and done["resumed_at_epoch"] == killed["epochs_completed"]
    assert [h["epoch"] for h in done["history"]] == list(range(1, OUTLAST + 1))
    assert retry.value == done["best_val_acc"]
    assert retry.intermediate_values == {h["epoch"]: h["val_acc"] for h in done["history"]}
    slurm.wait_idle()


@pytest.mark.slow
def test_time_limit_signal_checkpoints_requeues_and_resumes(
    slurm: SlurmCluster,  # noqa: F811
    tmp_path,
):
    """A job with ``signal_delay_s=120`` (sbatch --signal=USR2@120) whose time limit is
    brought within 2 min of its end once it has checkpointed an epoch (scontrol update
    TimeLimit) gets SIGUSR2 before its limit (slurmctld checks limits every 30 s), requeues
    itself (submitit) and stops; SLURM runs it again (its limit set back to 5 min) and it
    resumes from its last finished epoch (``$SLURM_RESTART_COUNT`` -> trainer.resume). The
    run is far longer than the limit; once its resumed run has trained an epoch the job is
    cancelled."""
    run_dir = tmp_path / "0"
    proc = start_sweep(
        *LONG,
        "trainer.epochs=1000",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.signal_delay_s=120",
        "hydra.launcher.max_num_timeout=5",
        f"hydra.sweep.dir={tmp_path}",
    )
    wait_epoch(slurm, run_dir, 1, proc)
    task = running_task(slurm)
    # the limit 45-105 s ahead: within the signal delay, later than the next limit check
    limit_min = -(-(slurm.elapsed_s(task) + 45) // 60)
    slurm.cmd("scontrol", "update", f"jobid={task}", f"TimeLimit={limit_min}")
    stopped: list[int] = []  # the checkpoint's epoch when the job left the node, requeued
    statuses: set[str] = set()

    def resumed() -> dict:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        rec = record(run_dir)
        statuses.add(rec.get("status", ""))
        ckpt = run_dir / "checkpoint.pt"
        if not stopped and ckpt.exists() and all(j["state"] != "RUNNING" for j in slurm.jobs()):
            stopped.append(torch.load(ckpt, weights_only=True)["epoch"])
            slurm.cmd("scontrol", "update", f"jobid={task}", "TimeLimit=5")  # no 2nd signal
        done = stopped and rec.get("resumed_at_epoch") is not None
        return rec if done and rec["epochs_completed"] > rec["resumed_at_epoch"] else {}

    rec = slurm.wait_for("the requeued job to resume and train", resumed, 240, 0.05)
    assert running_task(slurm) == task
    slurm.cmd("scancel", task)
    out = proc.communicate(timeout=300)[0]
    assert stopped[0] >= 1 and rec["resumed_at_epoch"] == stopped[0], (stopped, rec)
    assert rec["status"] == "running" and "failed" not in statuses  # stopped, not failed
    assert [h["epoch"] for h in rec["history"]] == list(range(1, rec["epochs_completed"] + 1))
    logs = "".join(p.read_text() for p in (tmp_path / ".submitit").glob("*/*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs, logs[-3000:]
    assert "requeued by SLURM: stopping" in logs
    assert "SLURM runs this job again (SLURM_RESTART_COUNT=1): resuming" in logs
    slurm.wait_for(
        "REQUEUED then CANCELLED in sacct",
        lambda: slurm.acct_states(task) == ["REQUEUED", "CANCELLED"],
    )
    assert proc.returncode == 1 and "1 of 1 jobs failed" in out, out[-3000:]
    slurm.wait_idle()


@pytest.mark.slow
def test_node_failure_requeues_the_job_which_resumes(slurm: SlurmCluster, tmp_path):  # noqa: F811
    """``scontrol update nodename=N state=down`` while a job trains: SLURM records NODE_FAIL
    and requeues the job; it runs again on the node (back by ReturnToService) and continues
    the run in its folder from the last checkpoint: every epoch once, nothing counted twice."""
    run_dir = tmp_path / "0"
    # 30 epochs: slurmd may take a while to kill a job of a node set down
    proc = start_sweep(*LONG, "trainer.epochs=30", f"hydra.sweep.dir={tmp_path}")
    wait_epoch(slurm, run_dir, 1, proc)
    task = running_task(slurm)
    slurm.cmd("scontrol", "update", f"nodename={slurm.node}", "state=down", "reason=test")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    rec = record(run_dir)
    assert rec["status"] == "completed" and rec["resumed_at_epoch"] >= 1
    assert [h["epoch"] for h in rec["history"]] == list(range(1, 31))
    assert summary(tmp_path)[0]["status"] == "completed"
    slurm.wait_for(
        "NODE_FAIL then COMPLETED in sacct",
        lambda: slurm.acct_states(task) == ["NODE_FAIL", "COMPLETED"],
    )
    slurm.wait_idle()


def test_a_job_sacct_calls_ended_but_the_controller_still_queues_is_waited_for(
    slurm: SlurmCluster,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """sacct lags slurmctld: after a node failure it can show the job's NODE_FAIL row before
    the requeued one. A job the controller still queues is not lost: the launcher waits for
    its result. (The lag itself cannot be produced on demand: the watcher reports it once.)"""
    import submitit

    from hydra_plugins.snnbench_optuna_sweeper.slurm_launcher import still_queued, wait_until_final

    held = slurm.cmd("sbatch", "--parsable", "--hold", "--wrap", "true").strip()
    assert still_queued(held)
    slurm.cmd("scancel", held)
    slurm.wait_for("the held job to leave the queue", lambda: not still_queued(held))
    assert not still_queued("999999")  # unknown to the controller

    executor = submitit.SlurmExecutor(folder=tmp_path)
    executor.update_parameters(time=5, cpus_per_task=1, mem="1G")
    job = executor.submit(subprocess.check_output, ["sh", "-c", "sleep 4; echo 7"])
    real_is_done = job.watcher.is_done
    lag = [True]

    def lagging_is_done(job_id: str, mode: str = "standard") -> bool:
        if lag and job_id == job.job_id:
            return lag.pop()  # "NODE_FAIL": final for submitit
        return real_is_done(job_id, mode)

    monkeypatch.setattr(job.watcher, "is_done", lagging_is_done)
    wait_until_final(job, every_s=0.5)
    assert not lag and job.paths.result_pickle.exists()  # returned when the job really ended
    assert job.result() == b"7\n"
    slurm.wait_idle()


# ----------------------------------------------------------------------------- the study


def test_study_slurm_executor_command_and_refusals(tmp_path, monkeypatch, capsys):
    """The sbatch line of an item (no cluster needed); one-line refusals of bad flags."""
    ex = SlurmExecutor(tmp_path, ["--partition=cpu", "--time=60"], cpus=2)
    line = ex.sbatch(["python", "-m", "snnbench", "tag=a b"])
    assert line[:4] == ["sbatch", "--wait", "--parsable", "--job-name=snnbench-study"]
    assert f"--output={tmp_path / '%j.out'}" in line and "--cpus-per-task=2" in line
    assert line[-4:] == ["--partition=cpu", "--time=60", "--wrap", "python -m snnbench 'tag=a b'"]
    for given in (["-c", "4"], ["-c4"], ["--cpus-per-task=4"], ["--cpus-per-task", "4"]):
        line = SlurmExecutor(tmp_path, given, cpus=2).sbatch(["true"])
        assert not any(a.startswith("--cpus-per-task=2") for a in line), line  # --sbatch wins
    item = load_plan("quick").part("search_ann").search
    one, two, three = study.Runner(tmp_path, load_plan("quick"), 1, search_workers=3).commands(
        part_items(load_plan("quick").part("search_ann"), load_plan("quick"), {})[0]
    )
    assert two == [*one, "hydra.sweeper.sampler.seed=11234"]  # the default seed 1234, stepped
    assert three == [*one, "hydra.sweeper.sampler.seed=21234"]
    assert f"hydra.sweep.dir={tmp_path / item.path}" in one  # one folder, one optuna.db
    url = "postgresql://snn@db.example/optuna"
    runner = study.Runner(tmp_path, load_plan("quick"), 1, storage=url)
    assert f"hydra.sweeper.storage={url}" in runner.command(item)
    assert study.main(["--quick", "--storage", "postgresql://snn:pw@db/optuna"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a password" in err[0] and "pw" not in err[0], err
    db = tmp_path / "elsewhere.db"  # a study in another storage is found there, not in the folder
    created = optuna.create_study(study_name=item.study, storage=f"sqlite:///{db}")
    created.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    assert study.load_search(tmp_path / item.path, item.study) is None
    found = study.load_search(tmp_path / item.path, item.study, f"sqlite:///{db}")
    assert [t.value for t in found.get_trials()] == [0.5]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    res = subprocess.run(
        [sys.executable, "-m", "snnbench.study", "--quick", "--launcher", "slurm"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "snnbench.study: error: --launcher slurm needs sbatch on the PATH (a SLURM login node)"
    ]
    assert not (tmp_path / "outputs").exists()
    res = subprocess.run(
        [sys.executable, "-m", "snnbench.study", "--sbatch=--time=5"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 2 and "--sbatch is only for --launcher slurm" in res.stderr


@pytest.mark.slow
def test_study_items_run_as_slurm_jobs(slurm: SlurmCluster, tmp_path):  # noqa: F811
    """The study runner with the SLURM executor (``--launcher slurm``): a run of the quick
    plan's reproduction (the ANN, one seed) is one SLURM job, its ANN search two jobs
    (``--search-workers 2``) sharing the search's Optuna storage: the study has the plan's
    trial count, run by both jobs; a local runner afterwards finds everything recorded and
    runs nothing."""
    root = tmp_path / "results"
    quick = load_plan("quick")
    reproduction = quick.part("reproduction")
    ann = tuple(g for g in reproduction.runs if g.path == "reproduction/ann")
    one_run = dataclasses.replace(reproduction, seeds=(0,), runs=ann)
    plan = dataclasses.replace(quick, parts=(one_run, quick.part("search_ann")))
    parts = ["reproduction", "search_ann"]
    executor = make_executor("slurm", root / "study_log" / "slurm", "--mem=1G --time=10", 1)
    assert study.run_study(root, plan, parts, 1, executor, search_workers=2) == 0
    logs = sorted((root / "study_log" / "slurm").glob("*.out"))
    assert len(logs) == 3  # one run, one search as two workers: one job each
    slurm.wait_for(
        "three COMPLETED study jobs in sacct",
        lambda: (
            slurm.cmd("sacct", "-n", "-X", "-P", "--name=snnbench-study", "-o", "State").split()
            == ["COMPLETED"] * 3
        ),
    )
    search = plan.part("search_ann").search
    trials = study.load_search(root / search.path, search.study).get_trials()
    ran = [t for t in trials if ATTR_SKIPPED not in t.system_attrs]
    assert [t.state for t in ran] == [TrialState.COMPLETE] * search.n_trials, trials
    assert all(t.state == TrialState.FAIL for t in trials if t not in ran)  # over the cap
    assert len({t.system_attrs[ATTR_WORKER] for t in ran}) == 2  # both jobs ran trials
    runner = study.Runner(root, plan, 1)  # the local executor
    for part in parts:
        items = part_items(plan.part(part), plan, {})
        assert all(runner.done(item) for item in items), part
    record = json.loads((root / "reproduction" / "ann" / "seed0" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["config"]["tag"] == "study"
    slurm.wait_idle()
