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
from snnbench.studies import runner as study
from snnbench.studies.plan import load_plan, part_items
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


PUBLISHED = load_plan("published")
QUICK = load_plan("quick")


def test_plan_items_are_fixed_folders_and_the_study_settings():
    items = part_items(PUBLISHED.part("reproduction"), PUBLISHED, {})
    assert [i.path for i in items][:2] == ["reproduction/ann/seed0", "reproduction/ann/seed1"]
    assert items[0].overrides == ("model=ann", "trainer.epochs=10", "trainer.seed=0")
    temporal = [i for i in items if "temporal" in i.path]
    assert all("experiment=study" in i.overrides for i in temporal)
    best = {"search_temporal": ["model.num_steps=37", "neuron.beta=0.8", "optimizer.lr=0.002"]}
    sweep = part_items(PUBLISHED.part("t_sweep"), PUBLISHED, best)
    values = PUBLISHED.part("t_sweep").sweep.values
    assert {i.path.split("/")[1] for i in sweep} == {f"T{t}" for t in values}
    assert all("model.num_steps=37" not in i.overrides for i in sweep)  # T replaced
    paths = [i.path for i in sweep]
    # seed 0 at every T first, then the other seeds from the cheapest T up
    assert paths[: len(values)] == [f"t_sweep/T{t}/seed0" for t in values]
    assert paths[7:10] == ["t_sweep/T1/seed1", "t_sweep/T1/seed2", "t_sweep/T2/seed1"]
    assert paths[-1] == "t_sweep/T100/seed2" and len(set(paths)) == 21
    capped = dataclasses.replace(PUBLISHED.part("t_sweep").sweep, one_seed_from=50)
    part = dataclasses.replace(PUBLISHED.part("t_sweep"), sweep=capped)
    capped_items = part_items(part, PUBLISHED, best)
    assert capped_items[-1].path == "t_sweep/T25/seed2" and len(capped_items) == 7 + 2 * 5
    assert part_items(PUBLISHED.part("tuned"), PUBLISHED, {}) == []  # no recipe yet
    assert PUBLISHED.tags("tuned") == ("tuned_ann", "tuned_single_step", "tuned_temporal")


def test_the_published_plan_lists_every_recorded_run_as_done(capsys):
    """The YAML plan names the folders the committed records are in: nothing of round one
    would run again."""
    study.list_items(study.Runner(ROOT / "docs" / "results", PUBLISHED, None))
    lines = capsys.readouterr().out.splitlines()
    round_one = [ln for ln in lines if ln[:7].strip() in ("done", "todo", "running")
                 and " round2/" not in ln]  # fmt: skip
    assert len(round_one) == 49 and all(ln.startswith("done") for ln in round_one)


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("parts: {a: {runs: [{path: x}], search: {path: y, preset: p, trials: 1}}}",
         "parts.a needs exactly one of"),
        ("parts: {a: {runs: [{path: x, recipe: s}]}}", "recipe 's' is not a search part"),
        ("parts: {a: {runs: [{path: x}], seeds: [0, 0]}}", "share the folder x/seed0"),
        ("parts: {a: {runs: [{path: x, colour: red}]}}", "parts.a.runs[0].colour is not a key"),
        ("parts: {a: {search: {path: y, preset: p, trials: 0}}}", "trials must be an integer"),
        ("parts: {best: {runs: [{path: x}]}}", "parts.best: 'best' is a reserved part name"),
    ],
)  # fmt: skip
def test_a_bad_plan_is_one_line_naming_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml_text + "\n")
    res = subprocess.run([sys.executable, "-m", "snnbench.study", "--plan", str(path), "--list"],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


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
    runner = study.Runner(tmp_path, QUICK, None, python=str(fake))
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
    study.list_items(study.Runner(tmp_path / "r", QUICK, None))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("todo     study") and not (tmp_path / "r").exists()
    assert sum("it has not finished" in ln for ln in out) == 3
    assert not any("t_sweep" in ln or "tuned/" in ln for ln in out)


def _search_db(root, model: str, states: list[str]) -> None:
    """A real Optuna search of ``model`` under ``root`` with trials in ``states``."""
    import optuna
    from optuna.trial import TrialState, create_trial

    db = root / "search" / model / "optuna.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    s = optuna.create_study(study_name=f"study_{model}", storage=f"sqlite:///{db}",
                            direction="maximize")  # fmt: skip
    dist = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for k, state in enumerate(states):
        value = 0.9 + k / 100 if state == "COMPLETE" else None
        params = {"optimizer.lr": 1e-3 * (k + 1)}
        trial = create_trial(
            state=TrialState[state], value=value, params=params, distributions=dist
        )
        s.add_trial(trial)


def test_a_search_with_failed_trials_is_done_when_the_sweeper_is(tmp_path, capsys):
    """Done = ``max_trials`` new trials asked, failures included, none open; a search that
    finished with no completed trial makes the parts that need it say so in one line."""
    runner = study.Runner(tmp_path, QUICK, None)  # 3 trials a search
    _search_db(tmp_path, "ann", ["COMPLETE", "FAIL", "COMPLETE"])
    _search_db(tmp_path, "single_step", ["FAIL", "FAIL", "FAIL"])
    _search_db(tmp_path, "temporal", ["COMPLETE", "RUNNING", "COMPLETE"])
    (ann,) = part_items(QUICK.part("search_ann"), QUICK, {})
    assert runner.done(ann)
    assert runner.recipe_state("search_ann") == "ready"
    assert runner.best(write=False)["search_ann"] == ["optimizer.lr=0.003"]
    assert runner.recipe_state("search_single_step") == "none"
    assert runner.recipe_state("search_temporal") == "searching"  # a trial still runs
    assert runner.say_missing_recipes("tuned") is False
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "[study] tuned: no items of search_single_step: it finished without a completed "
        "trial, so there is no recipe (see its trials.csv)",
        "[study] tuned: no items of search_temporal yet: it has not finished",
    ]


def test_runner_keeps_a_folder_it_cannot_prove_stale_and_moves_one_it_can(
    make_cfg, tmp_path, monkeypatch, capsys
):
    """Exit 2 (bad input: here the data is missing) leaves the interrupted run's checkpoint
    and record untouched; exit 3 (a checkpoint of another config) moves them aside, and the
    run starts again and completes."""
    from snnbench.run.training import run
    from tests.conftest import TINY

    root = tmp_path / "root"
    overrides = (*TINY, "model=ann", "trainer.epochs=2")

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*overrides, tiny=False, run_dir=root / "part/run0"), on_epoch=interrupt)
    folder = root / "part/run0"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert "checkpoint.pt" in before
    runner = study.Runner(root, dataclasses.replace(QUICK, common=()), None)

    with monkeypatch.context() as m:  # no MNIST anywhere: the run stops with exit 2
        m.delenv("SNNBENCH_DATA", raising=False)
        m.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
        assert runner.run_items("part", [study.RunSpec("t", "part/run0", overrides)]) is False
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert "part/run0 did not finish (exit 2: bad config or data" in capsys.readouterr().out

    other = study.RunSpec("t", "part/run0", (*overrides, "optimizer.lr=0.01"))
    assert runner.run_items("part", [other]) is True  # exit 3, moved aside, run again
    (aside,) = (folder / study.STALE_DIR).iterdir()
    assert (aside / "checkpoint.pt").read_bytes() == before["checkpoint.pt"]
    assert (aside / "metrics.json").read_bytes() == before["metrics.json"]
    rec = json.loads((folder / "metrics.json").read_text())
    assert rec["status"] == "completed" and rec["config"]["optimizer"]["lr"] == 0.01
    assert collect([root]).runs["run_dir"].tolist() == [str(folder)]  # the moved one is hidden


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
        # a runner that is not complete says why: an item another runner held, or a part
        # that waits for a search; nothing failed
        reasons = [ln for ln in out.splitlines() if "another runner" in ln or "yet:" in ln]
        assert p.returncode == (1 if reasons else 0), out[-3000:] + err[-3000:]
        assert "did not finish" not in out, out[-3000:]
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


def test_readme_results_block_is_what_the_report_code_makes_of_the_records():
    """The README's Results tables are generated (``python -m analysis.study docs/results
    --readme README.md``) from the committed records, byte for byte."""
    from analysis.study import BLOCK_END, BLOCK_START, replace_block, results_block

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = results_block(collect([ROOT / "docs" / "results"]))
    assert replace_block(readme, block) == readme
    inside = readme[readme.index(BLOCK_START) : readme.index(BLOCK_END)]
    assert "(n=3)" in inside and "n (seeds)" in inside


def test_replace_block_needs_its_markers():
    from analysis.study import replace_block

    with pytest.raises(ValueError, match="no '<!-- results:start"):
        replace_block("# a README without the block\n", "x", "README.md")


@pytest.mark.slow
def test_a_users_own_study_yaml_runs_with_the_same_command(tmp_path):
    """A plan in the user's config folder: runs swept over a key, a search, runs from its
    recipe; the same command runs it, a second invocation finds it all done."""
    conf = tmp_path / "myconf" / "study"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(
        "name: mine\n"
        "root: results\n"
        "epochs: 1\n"
        "common: [dataset.train_subset=256, dataset.eval_subset=200, trainer.batch_size=64,"
        " spiking.max_samples=50, trainer.num_threads=1]\n"
        "parts:\n"
        "  lr_sweep:\n"
        "    seeds: [0]\n"
        "    sweep: {key: optimizer.lr, label: lr, values: [0.001, 0.003]}\n"
        "    runs: [{tag: lr_sweep, path: ann_lr, overrides: [model=ann]}]\n"
        "  my_search:\n"
        "    search: {tag: my_search, path: search, preset: study_ann, trials: 2,"
        " overrides: [trainer.epochs=1, hydra.sweeper.pruner.name=none]}\n"
        "  from_search:\n"
        "    seeds: [3]\n"
        "    runs: [{tag: tuned, path: tuned, recipe: my_search, overrides: [model=ann]}]\n"
    )
    cmd = [sys.executable, "-m", "snnbench.study", "--config-dir", str(tmp_path / "myconf"),
           "--plan", "mine"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    root = tmp_path / "results"
    for run in ("ann_lr/lr0.001/seed0", "ann_lr/lr0.003/seed0", "tuned/seed3"):
        rec = json.loads((root / run / "metrics.json").read_text())
        assert rec["status"] == "completed", run
    assert rec["config"]["tag"] == "tuned" and rec["config"]["trainer"]["seed"] == 3
    assert (root / "search" / "trials.csv").is_file() and (root / "README.md").is_file()
    again = subprocess.run([*cmd, "--list"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)  # fmt: skip
    assert [ln.split()[0] for ln in again.stdout.splitlines()] == ["done"] * 4
