"""Helpers of the sweep tests: a throwaway PostgreSQL cluster, secret checks."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def assert_no_secret(root: Path, secret: str, output: str = "") -> None:
    """No file under ``root`` (text or binary) and not ``output`` holds ``secret``."""
    assert secret not in output
    for path in Path(root).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


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


@pytest.fixture(scope="session")
def pg_url():
    """``$SNNBENCH_TEST_PG_URL``, else a throwaway PostgreSQL cluster on a loopback port."""
    url = os.environ.get("SNNBENCH_TEST_PG_URL")
    if url:
        yield url
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL: SNNBENCH_TEST_PG_URL unset and initdb/pg_ctl not found")
    base = Path(tempfile.mkdtemp(prefix="snnbench-pg-"))  # in /tmp: reachable by nobody
    os.chmod(base, 0o777)
    data, port = base / "data", _free_port()
    # postgres refuses to run as root: run the throwaway cluster as an unprivileged user
    sudo = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if sudo and not shutil.which("runuser"):
        pytest.skip("running as root and runuser not found to start PostgreSQL as nobody")
    init = subprocess.run(
        [*sudo, initdb, "-D", str(data), "-U", "snnbench", "--auth=trust", "-E", "UTF8"],
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
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        yield f"postgresql://snnbench@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*sudo, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)
