"""The study command end to end on its quick plan: every part runs, resumes, and reports."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from analysis.collect import collect
from analysis.study import part_seconds, write_study_report
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
    paths = [i.path for i in sweep]
    # seed 0 at every T first, then the other seeds from the cheapest T up
    assert paths[: len(study.FULL.t_values)] == [f"t_sweep/T{t}/seed0" for t in study.FULL.t_values]
    assert paths[7:10] == ["t_sweep/T1/seed1", "t_sweep/T1/seed2", "t_sweep/T2/seed1"]
    assert paths[-1] == "t_sweep/T100/seed2" and len(set(paths)) == 21
    capped = study.t_sweep(dataclasses.replace(study.FULL, t_one_seed_from=50), best)
    assert capped[-1].path == "t_sweep/T25/seed2" and len(capped) == 7 + 2 * 5  # 1 seed at T>=50


def test_runners_share_a_part_an_item_held_by_a_live_runner_is_passed(tmp_path):
    """A second runner passes over the item another (live) runner holds, runs the others, and
    runs that one once its holder has died."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake_python"  # stands for the training process: records its run dir
    fake.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do case $a in hydra.run.dir=*) echo "${{a#*=}}" >> {calls};; esac; done\n'
    )
    fake.chmod(0o755)
    runner = study.Runner(tmp_path, study.QUICK, None, python=str(fake))
    items = [study.RunSpec("t", f"part/run{k}", ()) for k in range(3)]
    lock = tmp_path / study.LOG_DIR / study.LOCK_DIR / "part__run1.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,sys,time; f=open({str(lock)!r},'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert runner.held(items[1]) and not runner.held(items[0])
        assert runner.run_items("part", items) is False  # nothing records completion here
        ran = calls.read_text().split()
        assert ran == [str(tmp_path / "part/run0"), str(tmp_path / "part/run2")]
    finally:
        holder.kill()
        holder.wait()
    calls.unlink()
    assert not runner.held(items[1])
    runner.run_items("part", items)
    assert len(calls.read_text().split()) == 3  # the dead holder's lock is free again


def test_list_of_an_empty_root_writes_nothing_and_names_the_missing_searches(tmp_path, capsys):
    study.list_items(study.Runner(tmp_path / "r", study.QUICK, None))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("todo     study") and not (tmp_path / "r").exists()
    assert sum("its search has not finished" in ln for ln in out) == 3
    assert not any("t_sweep" in ln or "tuned/" in ln for ln in out)


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
    """Two runners share the quick study (the second takes the parts that need no search);
    together they run every item once; a third invocation runs nothing and reports all."""
    root = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "snnbench.study", "--quick", "--root", str(root)]
    helper = ["--threads", "1", "--parts", "reproduction", "study_20ep", "t_sweep", "fashion"]
    procs = [
        subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for c in ([*cmd, "--threads", "1"], [*cmd, *helper])
    ]  # fmt: skip
    outs = [p.communicate(timeout=1500) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode in (0, 1), out[-3000:] + err[-3000:]
    started = [ln.split()[-1] for out, _ in outs for ln in out.splitlines()
               if ln.startswith("[study] 20")]  # fmt: skip
    assert len(started) == len(set(started)), "an item was run by both runners"
    assert any(ln.startswith("[study] 20") for ln in outs[1][0].splitlines())
    # a third invocation finds everything recorded, runs nothing, and reports it all
    before = (root / "reproduction/ann/seed0/metrics.json").read_text()
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "reproduction: 6/6 done" in res.stdout and "search_temporal: 1/1 done" in res.stdout
    assert not [ln for ln in res.stdout.splitlines() if ln.startswith("[study] 20")]
    assert (root / "reproduction/ann/seed0/metrics.json").read_text() == before
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
    # the time of each part, from the records themselves (runs' epochs, searches' trials)
    col = collect([root])
    everything = col.runs.assign(part=col.runs["tag"])
    for part in ("reproduction", "search_temporal", "tuned", "t_sweep", "fashion"):
        assert part_seconds(root, everything, part) > 0, part
    sweep = everything[everything["part"] == "t_sweep"]
    assert part_seconds(root, everything, "t_sweep") == pytest.approx(sweep["epochs_time_s"].sum())
    assert "Time in the records (h)" in report
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
