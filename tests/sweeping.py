"""Helpers of the sweep tests: a throwaway PostgreSQL cluster, secret checks."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def assert_no_secret(root: Path, secret: str, output: str = "") -> None:
    """No file under ``root`` (text or binary) and not ``output`` holds ``secret``."""
    assert secret not in output
    for path in Path(root).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def fresh_database(url: str, prefix: str) -> str:
    """A new, empty database ``<prefix>_<pid>_<ns>`` on the test PostgreSQL cluster at
    ``url``; its URL."""
    psycopg2 = pytest.importorskip("psycopg2")
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{os.getpid()}_{time.time_ns() % 10**9}"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


@dataclass
class PgCluster:
    """A throwaway PostgreSQL cluster on a loopback port: trust on its Unix socket (for the
    test's own set-up), ``host_auth`` over TCP (what the code under test uses)."""

    port: int
    socket_dir: Path

    def admin(self, sql: str, dbname: str = "postgres") -> list[tuple]:
        """Run ``sql`` as the cluster's superuser over the socket; the rows, if any."""
        import psycopg2

        conn = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user="snnbench", dbname=dbname
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def url(self, user: str = "snnbench", dbname: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"


@contextmanager
def pg_cluster(host_auth: str) -> Iterator[PgCluster]:
    """Start a cluster (skip the test when PostgreSQL is not installed); stop and remove it."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL: initdb/pg_ctl not found")
    base = Path(tempfile.mkdtemp(prefix="snnbench-pg-"))  # in /tmp: reachable by nobody
    os.chmod(base, 0o777)
    data, port = base / "data", _free_port()
    # postgres refuses to run as root: run the throwaway cluster as an unprivileged user
    sudo = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if sudo and not shutil.which("runuser"):
        pytest.skip("running as root and runuser not found to start PostgreSQL as nobody")
    auth = ["--auth-local=trust", f"--auth-host={host_auth}"]
    init = subprocess.run(
        [*sudo, initdb, "-D", str(data), "-U", "snnbench", *auth, "-E", "UTF8"],
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
    start = subprocess.run(
        [*sudo, pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start"],
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        yield PgCluster(port, base)
    finally:
        subprocess.run(
            [*sudo, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url():
    """``$SNNBENCH_TEST_PG_URL``, else a throwaway PostgreSQL cluster on a loopback port."""
    url = os.environ.get("SNNBENCH_TEST_PG_URL")
    if url:
        yield url
        return
    with pg_cluster("trust") as cluster:
        yield cluster.url()


@pytest.fixture(scope="session")
def pg_password_cluster():
    """A throwaway cluster whose TCP logins need the role's password (scram-sha-256)."""
    with pg_cluster("scram-sha-256") as cluster:
        yield cluster
