"""Tiny end-to-end runs: every model and encoding, the record, determinism, resume, NaN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from snnbench.run.results import BEST_MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE
from snnbench.run.training import TrainingDiverged, run
from tests.conftest import ROOT, TINY

REQUIRED = {
    "status",
    "test_acc",
    "final_test_acc",
    "best_val_acc",
    "best_epoch",
    "history",
    "n_params",
    "error",
    "versions",
    "config",
    "train_time_s",
    "epochs_completed",
}
EPOCH_KEYS = {
    "epoch",
    "train_loss",
    "train_acc",
    "val_acc",
    "test_acc",
    "time_s",
    "eval_time_s",
    "lr",
}

CASES = [
    ("model=ann",),
    ("model=single_step",),
    ("model=temporal", "encoding=rate", "model.num_steps=5"),
    ("model=temporal", "encoding=latency", "model.num_steps=5"),
    ("model=temporal", "encoding=delta", "model.num_steps=5"),
    ("model=temporal", "encoding=direct", "model.num_steps=5"),
    ("model=temporal", "neuron=synaptic", "model.num_steps=4", "model.readout=spike_count"),
    ("model=temporal", "model.engine=snntorch", "model.num_steps=4"),
]


def _load(run_dir):
    return json.loads((run_dir / METRICS_FILE).read_text())


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
def test_tiny_run_writes_complete_record(make_cfg, tmp_path, overrides):
    cfg = make_cfg(*overrides)
    best = run(cfg)
    rec = _load(tmp_path / "run")
    assert REQUIRED <= rec.keys()
    assert rec["status"] == "completed" and rec["error"] is None
    assert rec["best_val_acc"] == best and 0.0 <= best <= 1.0
    assert len(rec["history"]) == 1 and EPOCH_KEYS <= rec["history"][0].keys()
    assert rec["history"][0]["test_acc"] is None  # test is not evaluated every epoch
    assert rec["test_acc"] == rec["final_test_acc"] and 0.0 <= rec["test_acc"] <= 1.0
    assert rec["data"]["n_train"] == 256 and rec["data"]["n_test"] == 200
    assert rec["versions"]["torch"] == metadata.version("torch")
    assert rec["n_params"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert (tmp_path / "run" / CHECKPOINT_FILE).is_file()
    assert (tmp_path / "run" / BEST_MODEL_FILE).is_file()


def test_ann_learns_above_chance(make_cfg, tmp_path):
    cfg = make_cfg("model=ann", "dataset.train_subset=2000", "trainer.epochs=2")
    assert run(cfg) > 0.6


def test_test_acc_follows_best_validation_epoch(make_cfg, tmp_path):
    ov = ("model=ann", "trainer.epochs=3", "optimizer.lr=0.02")
    run(make_cfg(*ov, "trainer.test_every_epoch=true", run_dir=tmp_path / "every"))
    rec = _load(tmp_path / "every")
    best = max(rec["history"], key=lambda h: h["val_acc"])
    assert rec["best_val_acc"] == best["val_acc"]
    assert rec["test_acc"] == best["test_acc"] and rec["best_epoch"] == best["epoch"]
    assert rec["final_test_acc"] == rec["history"][-1]["test_acc"]
    # by default test is evaluated only at the end, with the same weights: same numbers
    run(make_cfg(*ov, run_dir=tmp_path / "end"))
    end = _load(tmp_path / "end")
    assert all(h["test_acc"] is None for h in end["history"])
    for key in ("test_acc", "final_test_acc", "best_epoch", "best_val_acc"):
        assert end[key] == rec[key]


def test_failed_spiking_pass_keeps_the_trained_run(make_cfg, tmp_path, monkeypatch):
    import snnbench.run.training as training

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure of the spiking pass")

    monkeypatch.setattr(training, "spiking_metrics", broken)
    value = run(make_cfg("model=temporal", "model.num_steps=3"))
    rec = _load(tmp_path / "run")
    assert rec["status"] == "completed" and rec["error"] is None
    assert rec["spiking"] == {"error": "RuntimeError: simulated failure of the spiking pass"}
    assert value == rec["best_val_acc"] and rec["test_acc"] is not None


class _Evil:
    """Unpickling it would create a file: a checkpoint must never run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_code(make_cfg, tmp_path):
    import torch

    from snnbench.config import ConfigError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "config": {}, "payload": _Evil(str(marker))}, run_dir / CHECKPOINT_FILE)
    with pytest.raises(ConfigError, match="not a checkpoint this version of snnbench can resume"):
        run(make_cfg("model=ann", "trainer.resume=true"))
    assert not marker.exists()


def test_best_model_file_always_matches_the_checkpoint(make_cfg, tmp_path):
    """A kill after the checkpoint but before best_model.pt is rewritten (here: a stale file
    put in its place) is repaired on resume: the best weights travel in the checkpoint."""
    import torch

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg("model=ann"), on_epoch=interrupt)
    best_file = tmp_path / "run" / BEST_MODEL_FILE
    good = torch.load(best_file, weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in good.items()}, best_file)
    run(make_cfg("model=ann", "trainer.resume=true"))
    run(make_cfg("model=ann", run_dir=tmp_path / "straight"))
    restored = torch.load(best_file, weights_only=True)
    assert all(torch.equal(restored[k], good[k]) for k in good)
    resumed, straight = _load(tmp_path / "run"), _load(tmp_path / "straight")
    assert resumed["test_acc"] == straight["test_acc"]


def _strip_times(rec):
    return [{k: v for k, v in h.items() if not k.endswith("time_s")} for h in rec["history"]]


def test_optimized_metric_chooses_the_returned_value(make_cfg, tmp_path):
    value = run(make_cfg("model=ann", "trainer.epochs=2", "optimized_metric=final_val_acc"))
    rec = _load(tmp_path / "run")
    assert value == rec["history"][-1]["val_acc"]


def test_same_seed_same_metrics(make_cfg, tmp_path):
    ov = ("model=temporal", "model.num_steps=4", "trainer.epochs=2")
    run(make_cfg(*ov, run_dir=tmp_path / "a"))
    run(make_cfg(*ov, run_dir=tmp_path / "b"))
    run(make_cfg(*ov, "trainer.seed=1", run_dir=tmp_path / "c"))
    a, b, c = (_load(tmp_path / x) for x in "abc")
    assert _strip_times(a) == _strip_times(b)
    assert _strip_times(a) != _strip_times(c)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.conftest import compose_cfg
    from snnbench.run.training import run
    cfg = compose_cfg({overrides!r}, {run_dir!r})
    def kill_after_first(epoch, record):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    run(cfg, on_epoch=kill_after_first)
""")


@pytest.mark.parametrize(
    "model",
    [
        ["model=ann", "optimizer.scheduler=cosine"],
        ["model=temporal", "model.num_steps=4", "neuron.learn_beta=true"],
        ["model=ann", "augment=affine", "trainer.label_smoothing=0.1"],
    ],
)
def test_killed_run_resumes_to_uninterrupted_result(make_cfg, tmp_path, model):
    overrides = [*TINY, *model, "trainer.epochs=3"]
    killed = tmp_path / "killed"
    script = KILL_SCRIPT.format(root=str(ROOT), overrides=overrides, run_dir=str(killed))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert proc.returncode == -9, proc.stderr
    partial = _load(killed)
    assert partial["status"] == "running" and partial["epochs_completed"] == 1

    run(make_cfg(*model, "trainer.epochs=3", "trainer.resume=true", run_dir=killed))
    run(make_cfg(*model, "trainer.epochs=3", run_dir=tmp_path / "straight"))
    resumed, straight = _load(killed), _load(tmp_path / "straight")
    assert resumed["status"] == "completed" and resumed["resumed_at_epoch"] == 1
    assert _strip_times(resumed) == _strip_times(straight)
    for key in ("best_val_acc", "test_acc", "final_test_acc", "best_epoch"):
        assert resumed[key] == straight[key]


def test_resume_refuses_a_different_config(make_cfg, tmp_path):
    run(make_cfg("model=ann"))
    from snnbench.config import ConfigError

    with pytest.raises(ConfigError, match="differs in optimizer.lr"):
        run(make_cfg("model=ann", "optimizer.lr=0.5", "trainer.resume=true"))


def test_ctrl_c_is_recorded_interrupted_and_resumes(make_cfg, tmp_path):
    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg("model=ann", "trainer.epochs=2"), on_epoch=interrupt)
    assert _load(tmp_path / "run")["status"] == "interrupted"
    run(make_cfg("model=ann", "trainer.epochs=2", "trainer.resume=true"))
    rec = _load(tmp_path / "run")
    assert rec["status"] == "completed" and rec["resumed_at_epoch"] == 1


def test_a_resumed_record_tells_every_session(make_cfg, tmp_path, monkeypatch):
    """The first session's start stays; each session is listed with its own overrides (a
    retried trial's, not the lost one's); the top-level overrides are the latest session's."""
    import snnbench.run.record as record_mod

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    monkeypatch.setattr(record_mod, "cli_overrides", lambda: ["optuna.trial=3"])
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg("model=ann", "trainer.epochs=2"), on_epoch=interrupt)
    first = _load(tmp_path / "run")
    monkeypatch.setattr(record_mod, "cli_overrides", lambda: ["optuna.trial=5"])
    run(make_cfg("model=ann", "trainer.epochs=2", "trainer.resume=true"))
    rec = _load(tmp_path / "run")
    assert rec["started_at"] == first["started_at"] == first["sessions"][0]["started_at"]
    assert [s["overrides"] for s in rec["sessions"]] == [["optuna.trial=3"], ["optuna.trial=5"]]
    assert rec["overrides"] == ["optuna.trial=5"]
    assert rec["sessions"][1]["resumed_at_epoch"] == 1
    assert all(s["versions"] and s["device"] == "cpu" for s in rec["sessions"])


def test_resuming_a_completed_run_returns_at_once(make_cfg, tmp_path):
    best = run(make_cfg("model=ann"))
    before = (tmp_path / "run" / METRICS_FILE).read_text()
    assert run(make_cfg("model=ann", "trainer.resume=true")) == best
    assert (tmp_path / "run" / METRICS_FILE).read_text() == before


def test_resume_without_checkpoint_starts_fresh(make_cfg, tmp_path):
    assert run(make_cfg("model=ann", "trainer.resume=true")) > 0


def test_nan_loss_fails_the_run_with_reason(make_cfg, tmp_path):
    cfg = make_cfg("model=ann", "optimizer=sgd", "optimizer.lr=1e30", "optimizer.momentum=0")
    with pytest.raises(TrainingDiverged, match="training loss became"):
        run(cfg)
    rec = _load(tmp_path / "run")
    assert rec["status"] == "failed" and "TrainingDiverged" in rec["error"]


def test_cli_runs_and_records(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "snnbench", "model=ann", *TINY, f"hydra.run.dir={tmp_path}/r"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    rec = _load(tmp_path / "r")
    assert rec["status"] == "completed" and "model=ann" in rec["overrides"]


def test_resume_accepts_changes_of_execution_only(make_cfg, tmp_path):
    """Event or dense layer 1, the tag and the trackers do not change what a run computes."""
    ov = ("model=temporal", "model.num_steps=3", "trainer.epochs=2")

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*ov, "model.event_input=off", "tag=a"), on_epoch=interrupt)
    run(make_cfg(*ov, "model.event_input=auto", "tag=b", "trainer.resume=true"))
    rec = _load(tmp_path / "run")
    assert rec["status"] == "completed" and rec["resumed_at_epoch"] == 1


def test_checkpoint_of_an_older_version_with_fewer_free_keys_resumes(make_cfg, tmp_path):
    """A checkpoint whose stored config still holds keys that are free on resume today
    (an older snnbench compared them) is not refused for them."""
    import torch

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg("model=ann", "trainer.epochs=2"), on_epoch=interrupt)
    path = tmp_path / "run" / CHECKPOINT_FILE
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"].update({"dataset.root": "data", "tag": "old", "dataset.download": True})
    torch.save(ckpt, path)
    run(make_cfg("model=ann", "trainer.epochs=2", "trainer.resume=true"))
    assert _load(tmp_path / "run")["status"] == "completed"


@pytest.mark.parametrize("model", ["ann", "single_step", "temporal"])
def test_debug_quick_learns_visibly(make_cfg, model):
    """The quick preset costs seconds and every built-in model learns in it, so a quick
    sweep compares something (chance is 10 %)."""
    cfg = make_cfg(f"model={model}", "debug=quick", "trainer.progress=false",
                   "spiking.enabled=false", tiny=False)  # fmt: skip
    assert cfg.trainer.epochs == 1 and cfg.dataset.train_subset == 2048
    assert run(cfg) >= 0.8
