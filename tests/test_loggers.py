"""Experiment trackers: TensorBoard event files and MLflow runs read back equal metrics.json,
a failing tracker never loses the run, a sweep's MLflow parent/child runs, and the Optuna
storage a sweep writes opens in optuna-dashboard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from snnbench.config import ConfigError
from snnbench.run.loggers import (
    EPOCH_METRICS,
    MLFLOW_PARENT_FILE,
    SWEEP_TAG,
    config_params,
    final_metrics,
    open_loggers,
)
from snnbench.run.results import METRICS_FILE
from snnbench.run.training import run

RUN = ["model.num_steps=3", "trainer.epochs=2", "trainer.test_every_epoch=true"]


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / METRICS_FILE).read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_final_metrics_take_summary_and_spiking_keys():
    record = {
        "test_acc": 0.5,
        "best_val_acc": 0.6,
        "best_epoch": 2,
        "final_test_acc": None,
        "spiking": {
            "synops_per_sample": 10.0,
            "energy_per_inference_uj": 0.25,
            "settle_step_mean": None,
            "layers": [{"name": "fc1", "firing_rate": 0.125}, {"name": "fc2", "firing_rate": None}],
        },
    }
    assert final_metrics(record) == {
        "test_acc": 0.5,
        "best_val_acc": 0.6,
        "best_epoch": 2.0,
        "spiking/synops_per_sample": 10.0,
        "spiking/energy_per_inference_uj": 0.25,
        "spiking/fc1/firing_rate": 0.125,
    }


def test_no_logger_by_default(make_cfg):
    cfg = make_cfg()
    assert cfg.get("logger") is None
    assert not open_loggers(cfg)


@pytest.mark.parametrize(
    ("option", "names"),
    [("tensorboard", ["tensorboard"]), ("mlflow", ["mlflow"]), ("many", ["tensorboard", "mlflow"])],
)
def test_every_logger_option_composes_and_instantiates(make_cfg, option, names):
    assert sorted(p.stem for p in (ROOT / "conf" / "logger").glob("*.yaml")) == [
        "many", "mlflow", "tensorboard",
    ]  # fmt: skip
    for name in names:
        pytest.importorskip(name, reason=f'needs the {name} extra (".[{name}]")')
    loggers = open_loggers(make_cfg(f"logger={option}"))
    assert sorted(a.name for a in loggers.adapters) == sorted(names)


def test_bad_logger_entry_is_a_config_error_before_any_data(make_cfg, tmp_path):
    pytest.importorskip("tensorboard", reason='needs the tensorboard extra (".[tensorboard]")')
    cfg = make_cfg("logger=tensorboard", "+logger.tensorboard.flush_secs=5")
    with pytest.raises(ConfigError, match=r"^logger.tensorboard could not be created: TypeError"):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_tensorboard_and_mlflow_read_back_equal_metrics_json(make_cfg, tmp_path):
    pytest.importorskip("tensorboard", reason='needs the tensorboard extra (".[tensorboard]")')
    mlflow = pytest.importorskip("mlflow", reason='needs the mlflow extra (".[mlflow]")')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = make_cfg("logger=many", *RUN)
    run(cfg)
    run_dir = tmp_path / "run"
    rec = _record(run_dir)
    assert rec["status"] == "completed"
    final = final_metrics(rec)
    assert {"test_acc", "best_val_acc", "spiking/synops_per_sample"} <= final.keys()
    assert {"spiking/energy_per_inference_uj", "spiking/fc1/firing_rate"} <= final.keys()

    # TensorBoard: every epoch's metrics, the summary, the hparams view
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    for key, name in EPOCH_METRICS.items():
        got = [(e.step, e.value) for e in ea.Scalars(name)]
        want = [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in rec["history"]]
        assert got == want, name
    for name, value in final.items():
        got = [(e.step, e.value) for e in ea.Scalars(name)]
        assert got == [(2, pytest.approx(value, rel=1e-6))], name
    hp = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in ea.PluginTagToContent("hparams").items()
    }
    exp = hp["_hparams_/experiment"].experiment
    assert {m.name.tag for m in exp.metric_infos} == set(final)
    start = hp["_hparams_/session_start_info"].session_start_info
    assert start.hparams["neuron.beta"].number_value == pytest.approx(0.9)
    assert start.hparams["model.name"].string_value == "temporal"
    assert start.hparams["status"].string_value == "completed"

    # MLflow: the default SQLite store in the run dir, one finished run
    client = mlflow.MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("snnbench")
    (mrun,) = client.search_runs([experiment.experiment_id])
    assert mrun.info.status == "FINISHED"
    assert mrun.data.tags["snnbench.status"] == "completed"
    params = config_params(cfg)
    assert mrun.data.params["neuron.beta"] == "0.9"
    assert mrun.data.params["model.hidden"] == "[256, 128]"
    assert set(mrun.data.params) == set(params)
    for key, name in EPOCH_METRICS.items():
        got = [(m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, name)]
        assert sorted(got) == [(h["epoch"], h[key]) for h in rec["history"]], name
    for name, value in final.items():
        assert mrun.data.metrics[name] == value
    assert not (Path.cwd() / "mlruns").exists()


def test_failing_tracker_costs_one_line_and_keeps_the_run(make_cfg, tmp_path, caplog):
    pytest.importorskip("mlflow", reason='needs the mlflow extra (".[mlflow]")')
    dead = f"http://me:secret@127.0.0.1:{_free_port()}"  # nothing listens there
    cfg = make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={dead}", "model.num_steps=2")
    caplog.set_level("WARNING", logger="snnbench")
    assert 0.0 <= run(cfg) <= 1.0
    rec = _record(tmp_path / "run")
    assert rec["status"] == "completed" and rec["spiking"]["synops_per_sample"] > 0
    lines = [r.getMessage() for r in caplog.records if "logger mlflow failed" in r.getMessage()]
    assert len(lines) == 1 and "metrics.json is unaffected" in lines[0]
    assert "\n" not in lines[0] and "secret" not in lines[0]


def test_unknown_tracking_uri_scheme_keeps_the_run(make_cfg, tmp_path, caplog):
    pytest.importorskip("mlflow", reason='needs the mlflow extra (".[mlflow]")')
    cfg = make_cfg("logger=mlflow", "logger.mlflow.tracking_uri=nosuch://x", "model.num_steps=2")
    caplog.set_level("WARNING", logger="snnbench")
    run(cfg)
    assert _record(tmp_path / "run")["status"] == "completed"
    assert sum("logger mlflow failed" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow
def test_sweep_groups_jobs_under_one_parent_run_and_opens_in_optuna_dashboard(tmp_path):
    """Two Optuna trials in two joblib worker processes: one MLflow parent run for the sweep,
    each trial a child tagged with its trial number; TensorBoard dirs under the sweep dir;
    the sweep's optuna.db loads in optuna-dashboard and lists the study."""
    pytest.importorskip("tensorboard", reason='needs the tensorboard extra (".[tensorboard]")')
    mlflow = pytest.importorskip("mlflow", reason='needs the mlflow extra (".[mlflow]")')
    dashboard = pytest.importorskip("optuna_dashboard", reason="needs optuna-dashboard")
    args = [*TINY, "model.num_steps=2", "trainer.num_threads=1", "spiking.max_samples=50"]
    args += ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=many"]
    proc = subprocess.run(
        [sys.executable, "-m", "snnbench", "-m", *args, f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("snnbench")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(SWEEP_TAG) == str(tmp_path.resolve())]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0].info.run_id
    saved = json.loads((tmp_path / MLFLOW_PARENT_FILE).read_text())
    assert saved["run_id"] == parent
    children = [r for r in runs if r.info.run_id != parent]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent}
    assert sorted(r.data.tags["optuna.trial"] for r in children) == ["0", "1"]
    for child in children:
        trial = child.data.tags["optuna.trial"]
        assert child.info.run_name == f"trial {trial}" and child.info.status == "FINISHED"
        rec = _record(tmp_path / trial)
        assert child.data.metrics["best_val_acc"] == rec["best_val_acc"]
        assert child.data.params["optuna.trial"] == trial
        assert list((tmp_path / trial / "tensorboard").glob("events.out.tfevents.*"))

    # optuna-dashboard's own loader opens the sweeper's SQLite storage and lists the study
    studies = _dashboard_get(dashboard.wsgi(f"sqlite:///{tmp_path / 'optuna.db'}"), "/api/studies")
    (study,) = studies["study_summaries"]
    assert study["study_name"] == "snnbench"


def _dashboard_get(app, path: str) -> dict:
    """GET ``path`` from a WSGI app (no server); the JSON body."""
    from wsgiref.util import setup_testing_defaults

    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), status
    return json.loads(body)


def test_journal_storage_opens_in_optuna_dashboard(tmp_path):
    dashboard = pytest.importorskip("optuna_dashboard", reason="needs optuna-dashboard")
    import optuna

    from snnbench.sweeps.storage import open_storage, resolve_storage

    # the storage the sweeper opens for hydra.sweeper.storage=journal:FILE
    spec = resolve_storage(f"journal:{tmp_path / 'study.log'}", tmp_path, tmp_path)
    study = optuna.create_study(study_name="snnbench", storage=open_storage(spec))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    app = dashboard.wsgi(str(tmp_path / "study.log"))  # optuna-dashboard path/to/study.log
    (summary,) = _dashboard_get(app, "/api/studies")["study_summaries"]
    assert summary["study_name"] == "snnbench"
    detail = _dashboard_get(app, f"/api/studies/{summary['study_id']}")
    assert len(detail["trials"]) == 3


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on a free loopback port (SQLite backend); its URL."""
    pytest.importorskip("mlflow", reason='needs the mlflow extra (".[mlflow]")')
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("the mlflow command is not on PATH")
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--default-artifact-root", str(store / "artifacts")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        proc.wait(timeout=30)


@pytest.mark.slow
def test_server_url_interrupted_run_and_its_resume_continue_one_mlflow_run(
    make_cfg, tmp_path, mlflow_server
):
    import mlflow

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    args = ["logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server}", "model.num_steps=2"]
    args += ["trainer.epochs=2"]
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*args), on_epoch=interrupt)
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("snnbench").experiment_id
    (first,) = client.search_runs([experiment])
    assert first.info.status == "KILLED" and first.info.run_name == "run"
    assert first.data.tags["snnbench.status"] == "interrupted"
    assert first.data.metrics["epochs_completed"] == 1

    run(make_cfg(*args, "trainer.resume=true"))
    rec = _record(tmp_path / "run")
    assert rec["status"] == "completed" and rec["resumed_at_epoch"] == 1
    (again,) = client.search_runs([experiment])
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    for key, name in (("val_acc", "val/acc"), ("train_loss", "train/loss")):
        history = client.get_metric_history(again.info.run_id, name)
        assert sorted((m.step, m.value) for m in history) == [
            (h["epoch"], h[key]) for h in rec["history"]
        ]
    assert again.data.metrics["best_val_acc"] == rec["best_val_acc"]
    assert again.data.metrics["test_acc"] == rec["test_acc"]
    assert not (tmp_path / "run" / "mlflow.db").exists()  # all of it went to the server


def test_sweep_parent_run_ends_when_its_last_job_ends(make_cfg, tmp_path, monkeypatch):
    """Two jobs of one sweep run at once: the first to end leaves the parent RUNNING, the
    last one finishes it."""
    mlflow = pytest.importorskip("mlflow", reason='needs the mlflow extra (".[mlflow]")')
    import snnbench.run.loggers as loggers_mod

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    monkeypatch.setattr(loggers_mod, "hydra_context", lambda: {"sweep_dir": sweep, "job": 0})
    cfg = make_cfg("model=ann")
    jobs = [loggers_mod.MLflowLogger() for _ in range(2)]
    for k, job in enumerate(jobs):
        (sweep / str(k)).mkdir()
        job.start(cfg, sweep / str(k))
    client = mlflow.MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    parent = jobs[0].parent_id
    assert jobs[1].parent_id == parent
    jobs[0].close("completed")
    assert client.get_run(parent).info.status == "RUNNING"
    assert client.get_run(jobs[0].run_id).info.status == "FINISHED"
    jobs[1].close("failed")
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(jobs[1].run_id).info.status == "FAILED"
