"""Which process runs a trial: ``host:pid:start`` identities and a same-host liveness check.

Only journal storages need the liveness check (they have no heartbeats); a process on
another host cannot be checked from here.
"""

from __future__ import annotations

import os
import socket

from snnbench.run.run_folder import _proc_start


def worker_pid(worker: str | None) -> int | None:
    """The pid in a :func:`worker_id` string, or None."""
    try:
        return int(str(worker).rsplit(":", 2)[1])
    except (IndexError, ValueError):
        return None


def worker_alive(worker: str) -> bool | None:
    """True/False if ``worker`` ran on this host and is/isn't alive; None if unknowable."""
    try:
        host, pid_s, start = worker.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _proc_start(pid)
    return not (start and now is not None and now != start)


class JobLost(RuntimeError):
    """A launcher's job ended without a result (cancelled, its node failed, killed at its
    time limit): the run may have left a record and a checkpoint in its run dir."""
