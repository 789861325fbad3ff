"""snnbench on a live SLURM cluster (tests/slurm_cluster.py): the cluster itself, sweeps
through ``hydra/launcher=slurm``, and faults (scancel, time limit, node failure, two writers).

The cluster is one node on this machine with the test timings of slurm_cluster.py
(KillWait 5 s, requeued jobs may start again after 10 s). Without root or the Slurm packages
every test here skips, saying which.
"""

from __future__ import annotations

import os
from pathlib import Path

from slurm_cluster import SlurmCluster, cluster, slurm  # noqa: F401 (slurm is a fixture)


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
