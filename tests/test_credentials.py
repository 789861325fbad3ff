"""Passwords in URLs: parsed by the libraries that define the syntax, masked at the door, never
in a file, record, tracker store or console line; PostgreSQL's own password sources work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sweeping import pg_password_cluster  # noqa: F401 (a fixture)

from snnbench.run import credentials
from tests.conftest import ROOT, TINY


@pytest.mark.parametrize(
    ("url", "masked", "passwords"),
    [
        ("postgresql://u:pa/ss@h:5432/db", "postgresql://u:***@h:5432/db", ["pa/ss"]),
        ("postgresql://u:p%40s%3Aw@h/db", "postgresql://u:***@h/db", ["p@s:w"]),
        (
            "postgresql+psycopg2://u@h/db?password=a%2Fb",
            "postgresql+psycopg2://u@h/db?password=***",
            ["a/b"],
        ),  # fmt: skip
        (
            "mysql+pymysql://u:pw@h/db?charset=utf8",
            "mysql+pymysql://u:***@h/db?charset=utf8",
            ["pw"],
        ),  # fmt: skip
        ("http://u:p%2Fw@h:5000/x", "http://u:***@h:5000/x", ["p/w"]),
        ("https://h/api?x=1&PASSWORD=abc", "https://h/api?x=1&PASSWORD=%2A%2A%2A", ["abc"]),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db", []),
        ("journal:/tmp/a.log", "journal:/tmp/a.log", []),
        ("postgresql://u@h/db", "postgresql://u@h/db", []),
    ],
)
def test_split_url_finds_every_password_form(url, masked, passwords):
    assert credentials.split_url(url) == (masked, passwords)


def test_the_door_masks_overrides_and_the_jobs_get_the_real_url(monkeypatch):
    monkeypatch.delenv(credentials.URLS_ENV, raising=False)
    real = "postgresql://u:pa/ss@h/db"
    args = [f"hydra.sweeper.storage='{real}'", "model=ann", "x=http://a:b%40c@h"]
    assert credentials.hide_overrides(args) == [
        "hydra.sweeper.storage='postgresql://u:***@h/db'",
        "model=ann",
        "x=http://a:***@h",
    ]
    assert credentials.reveal("postgresql://u:***@h/db") == real
    assert json.loads(os.environ[credentials.URLS_ENV])["http://a:***@h"] == "http://a:b%40c@h"
    text = f"could not connect to {real}; password pa/ss (pa%2Fss) refused"
    assert "pa/ss" not in credentials.redact(text) and "pa%2Fss" not in credentials.redact(text)
    monkeypatch.delenv(credentials.URLS_ENV)
    with pytest.raises(RuntimeError, match=credentials.URLS_ENV):
        credentials.reveal("postgresql://u:***@h/db")


def test_a_password_from_a_config_file_is_masked_in_the_composed_config(monkeypatch):
    monkeypatch.delenv(credentials.URLS_ENV, raising=False)
    cfg = OmegaConf.create({"logger": {"mlflow": {"tracking_uri": "postgresql://u:k3y@h/m"}}})
    OmegaConf.set_readonly(cfg, True)
    credentials.mask_config(cfg)
    assert cfg.logger.mlflow.tracking_uri == "postgresql://u:***@h/m"
    assert credentials.reveal(cfg.logger.mlflow.tracking_uri) == "postgresql://u:k3y@h/m"


# ------------------------------------------------------------------ canary, real PostgreSQL

#: role -> (its password, the URL form that carries it)
ROLES = {
    "slash": ("can/ary-s1ash", "userinfo"),  # a raw '/' in the userinfo
    "enc": ("can@ary:enc0ded", "encoded"),  # '@' and ':' percent-encoded
    "query": ("can/ary@qu3ry", "query"),  # ?password=, percent-encoded
}


def _url(cluster, role: str, dbname: str) -> str:
    from urllib.parse import quote

    password, form = ROLES[role]
    host = f"127.0.0.1:{cluster.port}/{dbname}"
    if form == "userinfo":
        return f"postgresql://{role}:{password}@{host}"
    if form == "encoded":
        return f"postgresql://{role}:{quote(password, safe='')}@{host}"
    return f"postgresql://{role}@{host}?password={quote(password, safe='')}"


@pytest.fixture(scope="module")
def pg_roles(pg_password_cluster):  # noqa: F811
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install -e .[postgres])")
    pytest.importorskip("mlflow", reason='needs the mlflow extra (".[mlflow]")')
    cluster = pg_password_cluster
    for role, (password, _) in ROLES.items():
        cluster.admin(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    for db in ("mlflow", "optuna"):
        cluster.admin(f"CREATE DATABASE {db}")
    return cluster


def _snnbench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    quiet = ["trainer.num_threads=1", "spiking.max_samples=50", "trainer.progress=false"]
    return subprocess.run(
        [sys.executable, "-m", "snnbench", *args, *TINY, *quiet],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _canaries() -> set[str]:
    forms = set()
    for password, _ in ROLES.values():
        forms |= credentials._forms(password)
    return forms


def _assert_nowhere(cluster, root: Path, console: str) -> None:
    """No file under ``root``, no row of the tracker and study databases and not the
    console output holds any form of any password."""
    canaries = _canaries()
    for canary in canaries:
        assert canary not in console, canary
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for canary in canaries:
                assert canary.encode() not in data, (path, canary)
    for db in ("mlflow", "optuna"):
        tables = cluster.admin(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'", db
        )
        for (table,) in tables:
            rows = str(cluster.admin(f'SELECT * FROM "{table}"', db))
            for canary in canaries:
                assert canary not in rows, (db, table, canary)


@pytest.mark.slow
def test_no_password_form_lands_anywhere_a_run_or_sweep_writes(pg_roles, tmp_path):
    """A single run, a grid sweep and two Optuna sweeps, with TensorBoard and MLflow (on
    PostgreSQL) and the Optuna study on PostgreSQL, each URL carrying a real password in
    another form: all of them work, and no password is found anywhere afterwards."""
    import mlflow
    import optuna

    cluster = pg_roles
    tmp_path = tmp_path / "out"  # where the runs write: all of it is searched
    tmp_path.mkdir()
    procs = [
        _snnbench("model=ann", "logger=many",
                  f"logger.mlflow.tracking_uri='{_url(cluster, 'slash', 'mlflow')}'",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path),
        _snnbench("-m", "model=ann,single_step", "logger=many",
                  f"logger.mlflow.tracking_uri='{_url(cluster, 'enc', 'mlflow')}'",
                  f"hydra.sweep.dir={tmp_path / 'grid'}", cwd=tmp_path),
        _snnbench("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "model.num_steps=2",
                  f"hydra.sweeper.storage='{_url(cluster, 'query', 'optuna')}'",
                  "hydra.sweeper.study_name=q", "logger=mlflow",
                  f"logger.mlflow.tracking_uri='{_url(cluster, 'query', 'mlflow')}'",
                  f"hydra.sweep.dir={tmp_path / 'optuna_q'}", cwd=tmp_path),
        _snnbench("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1", "model=ann",
                  f"hydra.sweeper.storage='{_url(cluster, 'slash', 'optuna')}'",
                  "hydra.sweeper.study_name=s", f"hydra.sweep.dir={tmp_path / 'optuna_s'}",
                  cwd=tmp_path),
    ]  # fmt: skip
    console = ""
    for proc in procs:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        console += proc.stdout + proc.stderr
    assert "logger mlflow failed" not in console, console[-3000:]
    for run_dir in ("run", "grid/0", "grid/1", "optuna_q/0", "optuna_q/1", "optuna_s/0"):
        rec = json.loads((tmp_path / run_dir / "metrics.json").read_text())
        assert rec["status"] == "completed", run_dir
    # the real URLs were used: every job is in the MLflow store and the Optuna studies
    store = mlflow.MlflowClient(_url(cluster, "enc", "mlflow").replace("://", "+psycopg2://"))
    experiment = store.get_experiment_by_name("snnbench")
    runs = store.search_runs([experiment.experiment_id])
    assert len(runs) == 1 + (2 + 1) + (2 + 1)  # a run; two sweeps of 2 jobs and a parent each
    assert all(r.info.status == "FINISHED" for r in runs)
    storage = _url(cluster, "slash", "optuna").replace("://", "+psycopg2://")
    for name, n in (("q", 2), ("s", 1)):
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * n
    _assert_nowhere(cluster, tmp_path, console)


@pytest.mark.slow
def test_passwords_from_pgpassfile_and_pgpassword(pg_roles, tmp_path):
    """URLs without a password: libpq reads it from PGPASSFILE (or PGPASSWORD) for both the
    Optuna storage and MLflow; without either the login is refused (exit 2, one line)."""
    cluster = pg_roles
    keys, tmp_path = tmp_path / "keys", tmp_path / "out"  # only "out" is searched
    keys.mkdir()
    tmp_path.mkdir()
    no_pw = {"PGPASSWORD": "", "PGPASSFILE": str(tmp_path / "none")}
    storage = f"hydra.sweeper.storage={cluster.url('enc', 'optuna')}"
    refused = _snnbench("-m", "hparams_search=optuna", "model=ann", storage,
                        "hydra.sweeper.study_name=p", f"hydra.sweep.dir={tmp_path / 'refused'}",
                        cwd=tmp_path, env=no_pw)  # fmt: skip
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "cannot be opened" in refused.stderr and "password" in refused.stderr

    pgpass = keys / "pgpass"
    password = ROLES["enc"][0].replace(":", "\\:")  # .pgpass escapes ':' and '\'
    pgpass.write_text(f"127.0.0.1:{cluster.port}:*:enc:{password}\n")
    pgpass.chmod(0o600)
    proc = _snnbench("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1", "model=ann",
                     storage, "hydra.sweeper.study_name=p", "logger=mlflow",
                     f"logger.mlflow.tracking_uri={cluster.url('enc', 'mlflow')}",
                     f"hydra.sweep.dir={tmp_path / 'pgpass_sweep'}", cwd=tmp_path,
                     env={"PGPASSWORD": "", "PGPASSFILE": str(pgpass)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "logger mlflow failed" not in proc.stdout + proc.stderr

    env = {"PGPASSWORD": ROLES["slash"][0], "PGPASSFILE": str(tmp_path / "none")}
    proc = _snnbench("model=ann", "logger=mlflow",
                     f"logger.mlflow.tracking_uri={cluster.url('slash', 'mlflow')}",
                     f"hydra.run.dir={tmp_path / 'pgpw'}", cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 0 and "logger mlflow failed" not in proc.stdout + proc.stderr
    _assert_nowhere(cluster, tmp_path, "")


@pytest.mark.parametrize(
    "masked", ["postgresql://u:***@h/db", "postgresql://u@h/db?password=***", "http://u:***@h/x"]
)
def test_a_masked_url_is_not_registered_again(monkeypatch, masked):
    """Masking twice (the door, then the composed config) keeps the real URL reachable."""
    monkeypatch.setenv(credentials.URLS_ENV, json.dumps({masked: "the real one"}))
    assert credentials.split_url(masked) == (masked, [])
    assert credentials.register(masked) == masked
    assert credentials.reveal(masked) == "the real one"
