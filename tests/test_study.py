"""The study command end to end on its quick plan: every part runs, resumes, and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from analysis.study import write_study_report
from snnbench import study
from tests.conftest import ROOT

SECTIONS = (
    "## 1. The study reproduced",
    "## 2. Tuned recipes",
    "## 3. The study's figures",
    "## 4. Searches",
    "## 5. How many time steps?",
    "## 6. Is the study's temporal SNN under-trained?",
    "## 7. Fashion-MNIST",
    "## 8. Energy and latency",
    "## 9. Machine, versions and wall time",
)
FIGURES = (
    "accuracy_bars.png",
    "loss_curves.png",
    "spike_raster.png",
    "t_sweep.png",
    "study_20ep.png",
    "energy_accuracy.png",
    "latency_curves.png",
    "optuna_history_temporal.png",
)


def test_plan_items_are_fixed_folders_and_the_study_settings():
    items = study.reproduction(study.FULL)
    assert [i.path for i in items][:2] == ["reproduction/ann/seed0", "reproduction/ann/seed1"]
    temporal = [i for i in items if "temporal" in i.path]
    assert all("experiment=study" in i.overrides for i in temporal)
    best = {"temporal": ["model.num_steps=37", "neuron.beta=0.8", "optimizer.lr=0.002"]}
    sweep = study.t_sweep(study.FULL, best)
    assert {i.path.split("/")[1] for i in sweep} == {f"T{t}" for t in study.FULL.t_values}
    assert all("model.num_steps=37" not in i.overrides for i in sweep)  # T replaced
    assert sweep[0].path.endswith("seed0") and sweep[-1].path.endswith("seed2")


def test_bad_arguments_are_one_line_errors():
    res = subprocess.run(
        [sys.executable, "-m", "snnbench.study", "--threads", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2 and "--threads=0 is not allowed" in res.stderr


@pytest.mark.slow
def test_quick_study_runs_end_to_end_and_continues(tmp_path):
    root = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "snnbench.study", "--quick", "--root", str(root)]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (root / "README.md").read_text()
    for section in SECTIONS:
        assert section in report
    for fig in FIGURES:
        assert (root / "figures" / fig).is_file(), fig
    runs = pd.read_csv(root / "runs.csv")
    parts = set(runs["part"])
    assert {"study", "tuned_temporal", "t_sweep", "study_20ep", "fashion_study"} <= parts
    assert {"search_ann", "search_single_step", "search_temporal"} <= parts
    tuned = runs[runs["part"] == "tuned_temporal"]
    assert (tuned["status"] == "completed").all()
    # a second invocation finds everything recorded and runs nothing again
    before = (root / "reproduction/ann/seed0/metrics.json").read_text()
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "reproduction: 6/6 done" in res.stdout and "search_temporal: 1/1 done" in res.stdout
    assert (root / "reproduction/ann/seed0/metrics.json").read_text() == before
    # a run whose record was lost (a fresh machine without it) is run again, alone
    (root / "reproduction/ann/seed1/metrics.json").unlink()
    res = subprocess.run(
        [*cmd, "--parts", "reproduction"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0 and "reproduction: 5/6 done" in res.stdout
    rec = json.loads((root / "reproduction/ann/seed1/metrics.json").read_text())
    assert rec["status"] == "completed" and rec["config"]["tag"] == "study"


def test_report_of_an_empty_root_is_a_one_line_error(tmp_path):
    from analysis.collect import NoRunsError

    with pytest.raises(NoRunsError):
        write_study_report(tmp_path)
