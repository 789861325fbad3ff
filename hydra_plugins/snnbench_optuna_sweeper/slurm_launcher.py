"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, made fault-tolerant.

Two changes to ``submitit_slurm`` (everything else, keys included, is submitit's):

* **one lost job loses only itself.** A batch is one SLURM array; when a job of it ends
  without a result (cancelled, node failure without requeue, killed at its time limit) the
  stock launcher raises and the results of the batch's other jobs are lost. Here each job's
  result is collected on its own, and a lost job comes back as a failed ``JobReturn`` whose
  error is a :class:`~snnbench.sweeps.workers.JobLost` (the SLURM job id and state).
* **a requeued job resumes.** SLURM runs a requeued job again from its start (after a
  preemption or time-limit signal that submitit turned into ``scontrol requeue``, or after a
  node failure). Such a run (``$SLURM_RESTART_COUNT`` > 0) gets ``trainer.resume=true``: it
  continues from the run's last checkpoint, and a run already completed is left as it is.
* **the signal ends the job at once.** On the time-limit/preemption signal submitit
  requeues the job and raises ``SystemExit`` from its signal handler -- wherever the main
  thread is, e.g. inside a numba kernel, which turns it into a ``SystemError`` that the run
  then records as its failure. Here, once submitit has requeued the job, the process hands
  back its Optuna trial (the sweeper keeps its heartbeat while it waits in the queue) and
  exits at once; the checkpoint of the last finished epoch is what the requeued run resumes.

Needs hydra-submitit-launcher (the ``slurm`` extra); without it this module defines no
launcher (Hydra imports every module of its plugin packages at start).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from snnbench.sweeps.workers import JobLost

log = logging.getLogger(__name__)

#: Set by SLURM in a job that runs again after a requeue (0 or unset on its first run).
RESTART_ENV = "SLURM_RESTART_COUNT"
#: Longest wait between two ``sacct`` queries about a batch's jobs (submitit backs off up to
#: 600 s: a job lost after a few minutes would be noticed up to 10 minutes late).
SACCT_EVERY_S = 10


def resume_if_requeued(overrides: Sequence[str], environ: dict[str, str]) -> list[str]:
    """``overrides`` plus ``trainer.resume=true`` when SLURM is running the job again."""
    if int(environ.get(RESTART_ENV) or 0) < 1:
        return list(overrides)
    return [o for o in overrides if not o.startswith("trainer.resume=")] + ["trainer.resume=true"]


try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )
except ImportError:  # pragma: no cover - the slurm extra is not installed
    SubmititSlurmLauncher = None


def still_queued(job_id: str) -> bool:
    """Whether slurmctld still holds ``job_id`` (pending, running, requeued, ...).

    ``sacct`` lags the controller: right after a node failure it shows the job's NODE_FAIL
    row before the requeued one, and submitit takes that for the job's end. ``squeue`` asks
    the controller itself, which lists only jobs that have not ended."""
    try:
        out = subprocess.run(
            ["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def wait_until_final(job: Any, every_s: float = SACCT_EVERY_S) -> None:
    """Wait for ``job`` to end for good: a state that looks final in ``sacct`` while the
    controller still queues the job (requeued after a node failure) is waited out."""
    while True:
        job.wait()
        if job.paths.result_pickle.exists() or not still_queued(job.job_id):
            return
        log.info("SLURM job %s (%s) is queued again: waiting for it", job.job_id, job.state)
        job.watcher._finished.discard(job.job_id)  # submitit caches a final state for good
        time.sleep(every_s)


def _end_when_requeued() -> None:
    """Wrap submitit's handler of the requeue signal (installed before the job's function
    runs): after it requeued the job, hand back the trials and exit without unwinding."""
    import submitit

    try:
        signum = submitit.JobEnvironment()._usr_sig()
    except Exception:  # not in a submitit job, or an unknown signal name
        return
    submitit_handler = signal.getsignal(signum)
    if not callable(submitit_handler):
        return

    def handler(num: int, frame: Any) -> None:
        try:
            submitit_handler(num, frame)
        except SystemExit:  # submitit checkpointed and requeued the job
            from snnbench.sweeps.job import release_all

            log.warning("requeued by SLURM: stopping; the requeued run resumes from the last epoch")
            release_all()
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    signal.signal(signum, handler)


class _SlurmLauncher:
    """Each trial or grid point is one SLURM job (one task of an array per batch)."""

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """Runs inside the SLURM job."""
        _end_when_requeued()
        overrides = resume_if_requeued(sweep_overrides, dict(os.environ))
        if overrides != list(sweep_overrides):  # (before Hydra set up logging: to stderr)
            restarts = os.environ[RESTART_ENV]
            print(
                f"SLURM runs this job again ({RESTART_ENV}={restarts}): resuming", file=sys.stderr
            )
        return super().__call__(overrides, job_dir_key, job_num, job_id, singleton_state)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit the batch as one array; wait for every job; a lost job fails alone."""
        import submitit

        assert self.config is not None and len(job_overrides) > 0
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

        if SlurmJob.watcher._delay_s > SACCT_EVERY_S:
            SlurmJob.watcher = SlurmInfoWatcher(delay_s=SACCT_EVERY_S)
        jobs = executor.map_array(self, *zip(*job_params))
        results = []
        for idx, overrides, job in zip(
            range(initial_job_idx, initial_job_idx + len(jobs)), job_overrides, jobs
        ):
            try:
                wait_until_final(job)
                results.append(job.results()[0])
            except (
                submitit.core.utils.UncompletedJobError,
                submitit.core.utils.FailedJobError,
            ) as exc:
                results.append(self._lost(idx, list(overrides), job, exc))
        return results

    def _lost(self, idx: int, overrides: list[str], job: Any, exc: BaseException) -> JobReturn:
        """The failed ``JobReturn`` of a job that ended without a result."""
        state = job.state
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        error = JobLost(f"SLURM job {job.job_id} ended {state} without a result ({first[:300]})")
        log.warning("job #%d lost: %s", idx, error)
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=error)
        run_dir = self._run_dir(idx, overrides)
        if run_dir is not None:  # where the job ran, so its record can be read
            ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": run_dir}}})
        return ret

    def _run_dir(self, idx: int, overrides: list[str]) -> str | None:
        """The job's output dir (``hydra.sweep.dir``/``hydra.sweep.subdir``), or None."""
        assert self.hydra_context is not None and self.config is not None
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num = idx
            return str(Path(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)).resolve())
        except Exception:  # a subdir that needs Hydra's runtime resolvers
            return None


if SubmititSlurmLauncher is not None:

    class SlurmLauncher(_SlurmLauncher, SubmititSlurmLauncher):  # type: ignore[misc]
        """``hydra/launcher=slurm``: submitit's SLURM launcher, fault-tolerant (module doc)."""
