"""Where the study runner's items run: a local child process or a SLURM batch job.

An executor starts one item's command line and returns a handle with ``wait(timeout)``
(``subprocess.Popen``'s) that gives the item's exit code -- the codes of
``python -m snnbench`` (:mod:`snnbench.run.exit_codes`), whichever executor ran it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

#: ``--launcher`` choices of ``python -m snnbench.study``.
LAUNCHERS = ("local", "slurm")


class Executor(Protocol):
    def start(self, command: Sequence[str]) -> subprocess.Popen:
        """Start ``command``; ``wait()`` on the handle returns its exit code."""
        ...


class LocalExecutor:
    """Each item is a child process of the runner."""

    def start(self, command: Sequence[str]) -> subprocess.Popen:
        return subprocess.Popen(list(command), stdin=subprocess.DEVNULL)


class SlurmExecutor:
    """Each item is one SLURM batch job, submitted with ``sbatch --wait``: sbatch returns when
    the job has ended, with the job's exit code (1 if it was killed by a signal). The job
    runs the same command in the same folder with the runner's environment (sbatch exports
    it), so the runner's Python, ``$SNNBENCH_DATA`` and any storage secret reach it; its
    output goes to ``<log_dir>/<job id>.out``. A runner that is killed leaves its job
    running; the run-folder lock keeps a second runner's job from writing beside it.
    ``cpus`` (the runner's ``--threads``) becomes ``--cpus-per-task`` unless ``sbatch_args``
    give one (``-c``/``--cpus-per-task``).
    """

    def __init__(self, log_dir: Path, sbatch_args: Sequence[str] = (), cpus: int | None = None):
        self.log_dir = log_dir
        self.args = list(sbatch_args)
        self.cpus = cpus

    def sbatch(self, command: Sequence[str]) -> list[str]:
        """The ``sbatch`` command line that runs ``command`` as a job and waits for it."""
        args = ["sbatch", "--wait", "--parsable", "--job-name=snnbench-study"]
        args.append(f"--output={self.log_dir / '%j.out'}")
        if self.cpus is not None and not gives_cpus(self.args):
            args.append(f"--cpus-per-task={self.cpus}")
        return [*args, *self.args, "--wrap", shlex.join(command)]

    def start(self, command: Sequence[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(self.sbatch(command), stdin=subprocess.DEVNULL)


def gives_cpus(sbatch_args: Sequence[str]) -> bool:
    """Whether ``sbatch_args`` set the CPUs per task (``-c N``, ``-cN``, ``--cpus-per-task``)."""
    return any(
        a == "-c" or (a.startswith("-c") and a[2:].isdigit()) or a.startswith("--cpus-per-task")
        for a in sbatch_args
    )


class Group:
    """Several started items (one search's workers) as one handle: ``wait(timeout)`` returns
    when all have ended: the first non-zero exit code in start order, else 0."""

    def __init__(self, procs: Sequence[subprocess.Popen]):
        self.procs = list(procs)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc in self.procs:  # raises subprocess.TimeoutExpired like Popen.wait
            proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return next((p.returncode for p in self.procs if p.returncode != 0), 0)


def start_all(executor: Executor, commands: Sequence[Sequence[str]]) -> subprocess.Popen | Group:
    """Start every command at once (one search's workers); one handle for them all."""
    procs = [executor.start(c) for c in commands]
    return procs[0] if len(procs) == 1 else Group(procs)


def make_executor(
    launcher: str, log_dir: Path, sbatch_args: str = "", cpus: int | None = None
) -> Executor:
    """The executor of ``--launcher``; ValueError (one line) when it cannot run here."""
    if launcher == "local":
        return LocalExecutor()
    if launcher == "slurm":
        if shutil.which("sbatch") is None:
            raise ValueError("--launcher slurm needs sbatch on the PATH (a SLURM login node)")
        return SlurmExecutor(log_dir, shlex.split(sbatch_args), cpus)
    raise ValueError(f"--launcher={launcher!r} is not allowed; choose {' or '.join(LAUNCHERS)}")
