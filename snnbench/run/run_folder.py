"""One writer per run folder, and a finished run is never overwritten.

A run holds an exclusive ``fcntl.flock`` on ``<run dir>/.snnbench.lock`` for its whole
lifetime (from before it reads a checkpoint to after its last write). A second process that
wants the same folder -- a cancelled SLURM job still running out its KillWait while the
job's retry or requeued run starts, a user starting one command twice -- waits for the lock
(one log line naming the holder, ``host:pid:start``) up to :data:`WAIT_ENV` seconds
(default :data:`DEFAULT_WAIT_S`), then stops with one line. The lock is the kernel's: it
goes with its process, however that process ends, so no stale lock ever blocks a folder.
On NFS (v4, or v3 with lockd) Linux turns ``flock`` into a POSIX lock the server arbitrates
between hosts.

Once held, a folder whose ``metrics.json`` says ``completed`` is only ever read: with
``trainer.resume=true`` the run returns that result, without it the run stops with one line
(exit code 2) instead of starting over in it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from snnbench.config import ConfigError
from snnbench.run.results import METRICS_FILE, read_json

log = logging.getLogger("snnbench")

LOCK_FILE = ".snnbench.lock"
#: Environment variable: seconds to wait for a run folder another process holds.
WAIT_ENV = "SNNBENCH_RUN_LOCK_WAIT_S"
#: Covers SLURM's default KillWait (30 s) and slow job ends, with room to spare.
DEFAULT_WAIT_S = 120.0
POLL_S = 0.5


class RunFolderBusy(ConfigError):
    """Another process held the run folder for longer than the wait."""


class RunFolderFinished(ConfigError):
    """The run folder holds a completed run and ``trainer.resume`` is false."""


def wait_s() -> float:
    """The wait for a held folder: ``$SNNBENCH_RUN_LOCK_WAIT_S`` or :data:`DEFAULT_WAIT_S`."""
    value = os.environ.get(WAIT_ENV)
    try:
        return DEFAULT_WAIT_S if value is None else max(0.0, float(value))
    except ValueError:
        raise ConfigError(f"${WAIT_ENV}={value!r} is not a number of seconds") from None


def holder(run_dir: Path) -> str:
    """Who holds ``run_dir`` (``host:pid:start`` as written by the holder), or 'unknown'."""
    try:
        return (run_dir / LOCK_FILE).read_text(encoding="ascii").strip() or "unknown"
    except OSError:
        return "unknown"


def _try_lock(path: Path) -> int | None:
    """An fd holding the lock on ``path`` (the file that is there now), or None if held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # the previous holder may have removed the file between our open and lock
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(path)
    os.ftruncate(fd, 0)
    os.write(fd, f"{worker_id()}\n".encode("ascii"))
    return fd


def acquire(run_dir: Path, wait: float | None = None) -> int:
    """Lock ``run_dir`` for this process (waiting up to ``wait`` s); the lock's fd."""
    wait = wait_s() if wait is None else wait
    path = run_dir / LOCK_FILE
    deadline = time.monotonic() + wait
    told = False
    while True:
        fd = _try_lock(path)
        if fd is not None:
            if told:
                log.info("%s is free now: this run continues", run_dir)
            return fd
        if time.monotonic() >= deadline:
            raise RunFolderBusy(
                f"{run_dir} is in use by another run ({holder(run_dir)}) and stayed so for "
                f"{wait:.0f} s (${WAIT_ENV}); two runs never write one folder: wait for it "
                "to end or use another hydra.run.dir"
            )
        if not told:
            log.warning(
                "%s is in use by another run (%s): waiting up to %.0f s for it to end",
                run_dir,
                holder(run_dir),
                wait,
            )
            told = True
        time.sleep(POLL_S)


def release(run_dir: Path, fd: int) -> None:
    """Remove the lock file (still holding the lock, so no one holds a removed file), unlock."""
    try:
        os.unlink(run_dir / LOCK_FILE)
    except FileNotFoundError:
        pass
    os.close(fd)


def refuse_overwrite(run_dir: Path, resume: bool) -> None:
    """Stop before a run without ``trainer.resume`` starts over in a completed run's folder."""
    if resume:
        return
    try:
        status = read_json(run_dir / METRICS_FILE).get("status")
    except (OSError, ValueError, AttributeError):
        return
    if status == "completed":
        raise RunFolderFinished(
            f"{run_dir} holds a completed run (its {METRICS_FILE}); a finished run is never "
            "overwritten: use another hydra.run.dir, or trainer.resume=true to return its result"
        )


@contextmanager
def hold(run_dir: Path, resume: bool, wait: float | None = None) -> Iterator[None]:
    """Hold ``run_dir`` for the body (see the module doc); refuse to overwrite a finished run.
    A folder made here for the lock is removed again if the body left nothing in it (a run
    refused before it wrote anything leaves no folder behind)."""
    made = not run_dir.exists()
    fd = acquire(run_dir, wait)
    try:
        refuse_overwrite(run_dir, resume)
        yield
    finally:
        release(run_dir, fd)
        if made:
            try:
                run_dir.rmdir()  # only if empty
            except OSError:
                pass


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    """``host:pid:start`` of this process (recorded on the trials it asks for or runs)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or ''}"
