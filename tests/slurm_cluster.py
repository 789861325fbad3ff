"""A live single-node SLURM cluster for the tests: munged, MariaDB, slurmdbd, slurmctld, slurmd.

Everything lives in one temporary folder (configs, keys, the accounting database, state, spool,
logs, pid files) and talks over the loopback on free ports; the cluster's ``slurm.conf`` is
reached through ``$SLURM_CONF``, which the fixture sets for this process (and so for every
``sbatch``/``squeue`` it starts and every job). Tear-down cancels every job, stops the daemons
by their pids and removes the folder: nothing is left running or on disk.

Timings differ from a stock cluster only where the tests would otherwise wait idle:
``KillWait=2`` (default 30: a cancelled job's processes get SIGKILL 2 s after SIGTERM),
``AuthInfo=cred_expire=10`` (default 120: how long a requeued job waits
before it may start again), ``SchedulerParameters=sched_interval=2,bf_interval=1`` (defaults
60 and 30: how often pending jobs are looked at). The behaviour (signals, states, requeue,
accounting) is Slurm's own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Binaries the cluster needs (Debian: apt-get install slurm-wlm munge slurmdbd mariadb-server).
BINARIES = (
    "munged",
    "mungekey",
    "mariadb-install-db",
    "mariadbd",
    "mariadb",
    "mariadb-admin",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "sacct",
    "sacctmgr",
    "sinfo",
    "scancel",
    "runuser",
)
USERS = ("munge", "mysql", "slurm")
KILL_WAIT_S = 2
CRED_EXPIRE_S = 10
PARTITION = "debug"
CLUSTER = "snnbench"
#: A throwaway password of the test cluster's accounting database (loopback only).
DB_PASSWORD = "slurm-test-only"


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(Path(d, name)) for d in ("/usr/sbin", "/sbin") if Path(d, name).exists()), None
    )


def missing() -> str | None:
    """Why the live cluster cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "live SLURM tests need root (they start munged, MariaDB and the Slurm daemons)"
    absent = [b for b in BINARIES if _which(b) is None]
    if absent:
        return (
            f"live SLURM tests need {', '.join(absent)} "
            "(apt-get install slurm-wlm munge slurmdbd mariadb-server)"
        )
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"live SLURM tests need the system user {user!r} (made by the packages)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sh(argv: list[str]) -> None:
    """Run ``argv``; a failure raises with its output (for the start-up error)."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()[-1000:]
        raise RuntimeError(
            f"{Path(argv[0]).name} {' '.join(argv[1:4])}: rc {proc.returncode}: {out}"
        )


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except (OSError, IndexError):
        return False


def _stop(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it has not ended within ``timeout`` s."""
    if pid is None or not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


class SlurmCluster:
    """The running cluster: its folder, node, partition and command helpers."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.node = socket.gethostname().split(".")[0]
        self.partition = PARTITION
        self.conf = base / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._mariadbd: subprocess.Popen | None = None

    # -- commands -------------------------------------------------------------------------

    def cmd(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run a Slurm (or other) command against this cluster; its stdout."""
        proc = subprocess.run(
            [_which(args[0]) or args[0], *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: rc {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def node_state(self) -> str:
        return self.cmd("sinfo", "-h", "-n", self.node, "-o", "%t", check=False).strip()

    def jobs(self) -> list[dict[str, str]]:
        """The jobs slurmctld knows (squeue): id, array id, state, reason, name, restarts."""
        out = self.cmd("squeue", "-h", "-o", "%i|%F_%K|%T|%r|%j", check=False)
        keys = ("id", "array", "state", "reason", "name")
        return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line]

    def elapsed_s(self, job: str) -> int:
        """Seconds ``job`` has run (squeue's ``[D-][H:]M:S``)."""
        out = self.cmd("squeue", "-h", "-j", job, "-o", "%M").strip()
        days, _, hms = out.rpartition("-")
        seconds = 0
        for part in hms.split(":"):
            seconds = seconds * 60 + int(part)
        return seconds + 86400 * int(days or 0)

    def acct_states(self, job: str) -> list[str]:
        """Accounting states of ``job`` (sacct, allocations only), oldest first."""
        out = self.cmd("sacct", "-n", "-X", "-D", "-P", "-j", job, "-o", "State", check=False)
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def wait_for(self, what: str, predicate, timeout: float = 120, every: float = 0.2):
        """Poll ``predicate()`` until it is truthy (returned); fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def wait_idle(self, timeout: float = 60) -> None:
        """No job left, the node idle (after a fault test: the next one starts clean)."""
        self.wait_for("an idle node", lambda: not self.jobs() and self._idle(), timeout)

    def _idle(self) -> bool:
        state = self.node_state()
        if state.startswith(("down", "drain")):
            self.cmd("scontrol", "update", f"nodename={self.node}", "state=resume", check=False)
        return state == "idle"

    def log_tail(self, n: int = 15) -> str:
        parts = []
        for log in sorted((self.base / "log").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- bring-up ------------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        for sub, owner in (
            ("etc", "root"),
            ("munge", "munge"),
            ("db", "mysql"),
            ("state", "slurm"),
            ("spool", "root"),
            ("log", "slurm"),
            ("run", "slurm"),
        ):
            path = self.base / sub
            path.mkdir(mode=0o755)
            shutil.chown(path, owner, owner)
        self.ports = {name: _free_port() for name in ("db", "dbd", "ctld", "slurmd")}
        self._start_munge()
        self._start_mariadb()
        self._write_confs()
        self._start_slurmdbd()
        self.cmd("slurmctld", "-c")  # -c: a fresh controller (no saved state to recover)
        self.cmd("slurmd")
        self.wait_for(f"node {self.node} idle", lambda: self.node_state() == "idle", 60)
        self.startup_s = time.monotonic() - t0

    def _as(self, user: str, *args: str) -> list[str]:
        return [_which("runuser"), "-u", user, "--", _which(args[0]) or args[0], *args[1:]]

    def _start_munge(self) -> None:
        d = self.base / "munge"
        _sh(self._as("munge", "mungekey", "-c", "-k", str(d / "munge.key")))
        self.munge_socket = d / "munge.socket"
        _sh(
            self._as(
                "munge",
                "munged",
                f"--socket={self.munge_socket}",
                f"--key-file={d / 'munge.key'}",
                f"--pid-file={d / 'munged.pid'}",
                f"--log-file={d / 'munged.log'}",
                f"--seed-file={d / 'munged.seed'}",
            )
        )

    def _start_mariadb(self) -> None:
        db = self.base / "db"
        self.db_socket = self.base / "run" / "mysqld.sock"
        shutil.chown(self.base / "run", "mysql", "mysql")
        _sh(
            [
                _which("mariadb-install-db"),
                "--no-defaults",
                "--user=mysql",
                f"--datadir={db}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]
        )
        self._mariadbd = subprocess.Popen(
            [
                _which("mariadbd"),
                "--no-defaults",
                "--user=mysql",
                f"--datadir={db}",
                f"--socket={self.db_socket}",
                f"--port={self.ports['db']}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.base / 'run' / 'mysqld.pid'}",
                f"--log-error={self.base / 'db' / 'error.log'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        admin = [_which("mariadb-admin"), "--no-defaults", f"--socket={self.db_socket}"]
        self.wait_for(
            "MariaDB",
            lambda: subprocess.run([*admin, "ping"], capture_output=True).returncode == 0,
            60,
            0.1,
        )
        sql = (
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        _sh([_which("mariadb"), "--no-defaults", f"--socket={self.db_socket}", "-e", sql])

    def _write_confs(self) -> None:
        b, p, node = self.base, self.ports, self.node
        host = socket.gethostname()
        self.conf.write_text(
            f"""\
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={p["ctld"]}
SlurmdPort={p["slurmd"]}
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
KillWait={KILL_WAIT_S}
MailProg=/bin/true
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd.pid
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={p["dbd"]}
AccountingStoragePass={self.munge_socket}
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} \
RealMemory=4000 State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        dbd = b / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost={host}
DbdAddr=127.0.0.1
DbdPort={p["dbd"]}
SlurmUser=slurm
PidFile={b}/run/slurmdbd.pid
LogFile={b}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={p["db"]}
StorageUser=slurm
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
"""
        )
        shutil.chown(dbd, "slurm", "slurm")
        os.chmod(dbd, 0o600)

    def _start_slurmdbd(self) -> None:
        self.cmd("slurmdbd")
        self.wait_for(
            "slurmdbd",
            lambda: (
                subprocess.run(
                    [_which("sacctmgr"), "-n", "show", "cluster"], env=self.env, capture_output=True
                ).returncode
                == 0
            ),
            60,
            0.1,
        )
        self.cmd("sacctmgr", "-i", "add", "cluster", CLUSTER)

    # -- tear-down -----------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job and wait for them, stop the daemons by pid, remove the folder."""
        run = self.base / "run"
        if _alive(_pid(run / "slurmctld.pid") or -1):
            self.cmd("scancel", "--full", f"--partition={PARTITION}", check=False)
            try:
                self.wait_for("the jobs to end", lambda: not self.jobs(), 3 * KILL_WAIT_S + 30)
            except AssertionError:
                pass
            self.cmd("scontrol", "shutdown", check=False)
        for name in ("slurmctld", "slurmd", "slurmdbd"):
            _stop(_pid(run / f"{name}.pid"))
        self._kill_leftovers()
        if self._mariadbd is not None:
            _stop(self._mariadbd.pid, 30)
            self._mariadbd.wait()
        _stop(_pid(self.base / "munge" / "munged.pid"))
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Job processes (slurmstepd and the jobs' own) that outlived the daemons: every
        process whose environment names this cluster's slurm.conf, found by pid."""
        marker = f"SLURM_CONF={self.conf}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                _stop(int(proc.name), 2)


def cluster() -> Iterator[SlurmCluster]:
    """Start the cluster (skip when it cannot run here), yield it, tear it down."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="snnbench-slurm-"))
    os.chmod(base, 0o755)
    c = SlurmCluster(base)
    old = os.environ.get("SLURM_CONF")
    try:
        try:
            c.start()
        except Exception as exc:
            msg = f"the test SLURM cluster did not start: {exc}\n{c.log_tail()}"
            raise RuntimeError(msg) from None
        os.environ["SLURM_CONF"] = str(c.conf)
        yield c
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        c.stop()


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A live single-node SLURM cluster for this test session (see the module docstring)."""
    yield from cluster()
