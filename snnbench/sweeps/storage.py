"""Optuna storages: storage specs, opening, the database driver.

The storage URL may hold a password. It never travels in a job's overrides (which Hydra
logs and writes into ``.hydra/*.yaml`` and the run's ``metrics.json``): jobs get the
masked URL there and the real one through the environment (:mod:`snnbench.run.credentials`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snnbench.run import credentials
from snnbench.run.credentials import pg_driver
from snnbench.sweeps.names import DEFAULT_STORAGE_FILE
from snnbench.sweeps.settings import SweepConfigError

#: Attempts to open an RDB storage when several workers create its tables at once.
OPEN_ATTEMPTS = 5


def resolve_storage(spec: str | None, sweep_dir: Path | str, cwd: Path | str) -> str:
    """Absolute storage spec: ``None`` -> ``sqlite:///<sweep_dir>/optuna.db``.

    Accepted: any SQLAlchemy URL Optuna takes (``sqlite:///path``, ``postgresql://...``,
    ``mysql+pymysql://...``), ``journal:PATH`` (Optuna's JournalStorage on a file, for many
    processes), or a bare file path (``*.db``/``*.sqlite``/``*.sqlite3`` -> SQLite, ``*.log``/
    ``*.journal`` -> journal). Relative paths are taken from ``cwd`` (where the command ran).
    """
    if spec is None or str(spec).strip() == "":
        return f"sqlite:///{(Path(cwd) / sweep_dir / DEFAULT_STORAGE_FILE).resolve()}"
    spec = str(spec).strip()
    if spec.startswith("journal:"):
        path = spec[len("journal:") :]
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise SweepConfigError("hydra.sweeper.storage='journal:' needs a file path")
        return f"journal:{(Path(cwd) / path).resolve()}"
    if spec.startswith("sqlite:///"):
        path = spec[len("sqlite:///") :]
        if path in ("", ":memory:"):
            raise SweepConfigError(
                "hydra.sweeper.storage: an in-memory SQLite study cannot be shared with the jobs;"
                " give a file"
            )
        return f"sqlite:///{(Path(cwd) / path).resolve()}"
    if "://" in spec:
        return spec
    suffix = Path(spec).suffix.lower()
    if suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{(Path(cwd) / spec).resolve()}"
    if suffix in (".log", ".journal", ".jsonl"):
        return f"journal:{(Path(cwd) / spec).resolve()}"
    raise SweepConfigError(
        f"hydra.sweeper.storage={spec!r} is not allowed; use null (optuna.db in the sweep dir), "
        "a URL (sqlite:///FILE, postgresql://USER@HOST/DB), journal:FILE, or a *.db / *.log file"
    )


def redact(text: str) -> str:
    """``text`` with every password hidden (see :func:`snnbench.run.credentials.redact`)."""
    return credentials.redact(text)


def is_journal(spec: str) -> bool:
    """Whether ``spec`` names a journal storage (no heartbeats there)."""
    return spec.startswith("journal:")


def job_storage_spec(recorded: str) -> str:
    """The real storage URL of a job whose config says ``optuna.storage=recorded`` (masked
    when it holds a password: the real one comes from the environment)."""
    return credentials.reveal(recorded)


def open_storage(
    spec: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_callback: Callable[..., None] | None = None,
) -> Any:
    """An Optuna storage for a :func:`resolve_storage` spec.

    SQLite waits up to 120 s for its lock. For RDB storages the heartbeat settings are
    passed to ``RDBStorage`` (journal storages have none and ignore them). Opening is retried
    when workers started together race to create the tables of a fresh database.
    """
    import optuna
    import sqlalchemy.exc

    if is_journal(spec):
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    spec = pg_driver(spec)
    if spec.startswith("sqlite:"):
        Path(spec[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(
                spec,
                engine_kwargs=kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_callback,
            )
            if spec.startswith("sqlite:"):
                serialize_sqlite(storage.engine)
            return storage
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError,  # SQLite's "table ... already exists"
        ) as exc:
            lost_race = not isinstance(exc, sqlalchemy.exc.OperationalError) or (
                "already exists" in str(exc)
            )
            if not lost_race or attempt == OPEN_ATTEMPTS - 1:  # not a creation race after all
                raise
        time.sleep(0.2 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def serialize_sqlite(engine: Any) -> None:
    """Make every transaction of a SQLite ``engine`` take the write lock when it begins.

    pysqlite starts a transaction only at the first write, so two workers can both read a
    waiting trial as WAITING and both set it RUNNING: one retry run twice. ``BEGIN
    IMMEDIATE`` serialises read-then-write transactions (the writers queue on SQLite's lock,
    waiting up to its timeout). Connections opened before are closed.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_pysqlite_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()
