"""Bring your own model: a module and its YAML in a folder outside the package, run from the
command line (``--config-dir``) as a single run and as a 3-trial Optuna sweep, with the
spiking metrics in the record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT, TINY

USER_MODEL = '''
"""A user's convolutional SNN from snnTorch layers, stepped over T (no snnbench imports)."""
import torch
import snntorch as snn
from torch import nn


class TinyCSNN(nn.Module):
    def __init__(self, channels, input_shape, num_classes, beta=0.9):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, channels, 5)
        self.pool = nn.MaxPool2d(2)
        self.lif1 = snn.Leaky(beta=beta)
        self.fc = nn.Linear(channels * ((h - 4) // 2) * ((w - 4) // 2), num_classes)
        self.lif2 = snn.Leaky(beta=beta)

    def forward(self, x):  # [T, B, C, H, W] -> logits [B, classes]
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        mems = []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.pool(self.conv1(x[t])), mem1)
            _, mem2 = self.lif2(self.fc(spk1.flatten(1)), mem2)
            mems.append(mem2)
        return torch.stack(mems).mean(0)
'''

USER_YAML = """
# my own model: mynets.TinyCSNN with its arguments; the harness's keys come from the schema
defaults:
  - /model_schema@_here_
  - _self_
_target_: mynets.TinyCSNN
name: tiny_csnn
num_steps: 3
lr: 5.0e-3
channels: 4
beta: 0.8
"""


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """``<tmp>/code/mynets.py`` and ``<tmp>/conf/model/tiny_csnn.yaml``."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "mynets.py").write_text(textwrap.dedent(USER_MODEL))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny_csnn.yaml").write_text(USER_YAML)
    return tmp_path


def _snnbench(user_dir: Path, *args: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{user_dir / 'code'}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-m", "snnbench", *(["-m"] if multirun else [])]
        + ["--config-dir", str(user_dir / "conf")]
        + ["model=tiny_csnn", *TINY, "trainer.num_threads=1", *args],
        cwd=user_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _check_record(record: dict) -> None:
    assert record["status"] == "completed" and record["model"] == "tiny_csnn"
    assert record["config"]["model"]["_target_"] == "mynets.TinyCSNN"
    assert record["num_steps"] == 3 and record["encoding"] == "rate"
    sp = record["spiking"]
    assert "error" not in sp, sp
    conv, fc = sp["layers"]
    assert (conv["name"], conv["kind"], conv["op"]) == ("conv1", "Conv2d", "AC")
    assert (fc["name"], fc["kind"], fc["op"]) == ("fc", "Linear", "AC")
    ch = record["config"]["model"]["channels"]
    assert conv["dense_ops_per_sample"] == 3 * ch * 24 * 24 * 25  # T * outputs * kernel
    assert 0 < conv["synops_per_sample"] < conv["dense_ops_per_sample"]
    assert sp["acs_per_sample"] == conv["synops_per_sample"] + fc["synops_per_sample"]
    assert [L["name"] for L in sp["spiking_layers"]] == ["lif1", "lif2"]
    assert sp["spiking_layers"][0]["neurons"] == ch * 12 * 12
    assert all(0 <= L["firing_rate"] <= 1 for L in sp["spiking_layers"])
    assert sp["energy_per_inference_uj"] > 0 and sp["accuracy"] == record["test_acc"]


def test_user_model_single_run_from_the_command_line(user_dir):
    _snnbench(user_dir, f"hydra.run.dir={user_dir / 'run'}")
    _check_record(json.loads((user_dir / "run" / "metrics.json").read_text()))


def test_user_model_optuna_sweep_from_the_command_line(user_dir):
    sweep_dir = user_dir / "sweep"
    _snnbench(
        user_dir,
        "hydra.sweeper.search=optuna",
        "hydra.sweeper.n_trials=3",
        "model.channels=choice(2, 4)",
        "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
        f"hydra.sweep.dir={sweep_dir}",
        multirun=True,
    )
    study = optuna.load_study(study_name="snnbench", storage=f"sqlite:///{sweep_dir}/optuna.db")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        record = json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())
        _check_record(record)
        assert record["best_val_acc"] == t.value
        assert record["config"]["optimizer"]["lr"] == pytest.approx(t.params["optimizer.lr"])
        assert record["config"]["model"]["channels"] == t.params["model.channels"]
