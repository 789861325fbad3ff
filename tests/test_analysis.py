"""The analysis package on real tiny runs: collection of good and bad runs, table numbers,
every figure, the CLI and the notebook."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import collect, compare, figures, format_compare, study_table, to_latex, to_markdown
from analysis.collect import NoRunsError
from analysis.tables import mixed_groups
from snnbench.run.training import TrainingDiverged, run
from tests.conftest import ROOT, TINY, compose_cfg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _snnbench_multirun(sweep_dir: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "snnbench", "-m", *overrides, *TINY]
    cmd.append(f"hydra.sweep.dir={sweep_dir}")
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    """A real multirun tree: ANN and single-step (seeds 0, 1) and temporal T=5 (seeds 0, 1)."""
    root = tmp_path_factory.mktemp("analysis") / "multirun" / "2026-01-01"
    _snnbench_multirun(root / "10-00-00", "model=ann,single_step", "trainer.seed=0,1")
    _snnbench_multirun(root / "11-00-00", "model=temporal", "model.num_steps=5", "trainer.seed=0,1")
    return root.parent


def _copy_run(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    rec = json.loads((dst / "metrics.json").read_text())
    rec.update(changes)
    (dst / "metrics.json").write_text(json.dumps(rec))
    return dst


@pytest.fixture(scope="module")
def mixed(multirun, tmp_path_factory) -> Path:
    """outputs/ tree: 2 completed, 1 failed (NaN), running, pruned, partial, 2 corrupt, 1 empty."""
    out = tmp_path_factory.mktemp("mixed") / "outputs"
    ann0 = multirun / "2026-01-01" / "10-00-00" / "0"
    shutil.copytree(ann0, out / "ok_ann")
    shutil.copytree(multirun / "2026-01-01" / "11-00-00" / "0", out / "ok_temporal")
    nan = ["model=ann", "optimizer=sgd", "optimizer.lr=1e30", "optimizer.momentum=0"]
    with pytest.raises(TrainingDiverged):
        run(compose_cfg([*TINY, *nan], out / "failed"))
    _copy_run(ann0, out / "running", status="running", epochs=3)
    _copy_run(ann0, out / "pruned", status="pruned")
    _copy_run(ann0, out / "partial", epochs=4)
    (out / "corrupt_json").mkdir()
    (out / "corrupt_json" / "metrics.json").write_text('{"status": "completed", "hist')
    (out / "missing_keys").mkdir()
    (out / "missing_keys" / "metrics.json").write_text('{"status": "completed"}')
    (out / "refused" / ".hydra").mkdir(parents=True)
    return out


def test_collect_multirun(multirun):
    col = collect([multirun])
    runs = col.runs
    assert len(runs) == 6 and len(col.completed) == 6 and col.problems == []
    by_model = runs.groupby("model")
    assert by_model.size().to_dict() == {"ann": 2, "single_step": 2, "temporal": 2}
    assert runs.loc[runs.model == "ann", "T"].isna().all()
    assert runs.loc[runs.model == "ann", "encoding"].isna().all()
    assert set(runs.loc[runs.model == "single_step", "T"]) == {1}
    assert set(runs.loc[runs.model == "temporal", "T"]) == {5}
    assert sorted(runs["seed"]) == [0, 0, 0, 1, 1, 1]
    assert set(runs["encoding"].dropna()) == {"direct", "rate"}
    for col_name in ("beta", "lr", "dataset", "engine", "config.neuron.reset", "run_dir"):
        assert col_name in runs
    assert set(runs.loc[runs.model == "temporal", "lr"]) == {1e-4}
    for _, r in runs.iterrows():
        rec = json.loads((Path(r.run_dir) / "metrics.json").read_text())
        assert r.test_acc == rec["test_acc"] and r.best_val_acc == rec["best_val_acc"]
        assert r.time_per_epoch_s == pytest.approx(rec["history"][0]["time_s"])
    assert len(col.history) == 6 and {"epoch", "train_loss", "val_acc", "model"} <= set(
        col.history.columns
    )


def test_collect_reports_bad_runs_and_never_crashes(mixed):
    col = collect([mixed])
    assert sorted(col.completed["run"]) == ["ok_ann", "ok_temporal"]
    kinds = {Path(p.run_dir).name: (p.kind, p.reason) for p in col.problems}
    assert kinds["failed"][0] == "failed" and "TrainingDiverged" in kinds["failed"][1]
    assert kinds["running"][0] == "running" and "1/3 epochs" in kinds["running"][1]
    assert kinds["pruned"][0] == "pruned"
    assert kinds["partial"][0] == "partial" and "1/4" in kinds["partial"][1]
    assert kinds["corrupt_json"][0] == "corrupt" and "unreadable" in kinds["corrupt_json"][1]
    assert kinds["missing_keys"] == ("corrupt", "metrics.json lacks config, history")
    assert kinds["refused"][0] == "empty"
    assert col.problem_counts() == {
        "failed": 1,
        "running": 1,
        "pruned": 1,
        "partial": 1,
        "corrupt": 2,
        "empty": 1,
    }
    # a single run dir is a collection of one
    one = collect([mixed / "ok_ann"])
    assert len(one.runs) == 1 and one.runs["run"].tolist() == ["ok_ann"]


def test_collect_refuses_missing_and_empty_paths(tmp_path):
    with pytest.raises(NoRunsError, match="no such file"):
        collect([tmp_path / "nope"])
    with pytest.raises(NoRunsError, match="holds no run"):
        collect([tmp_path])


def test_compare_matches_hand_computed_numbers(multirun):
    runs = collect([multirun]).completed
    table = compare(runs, metric="test_acc").set_index("model")
    for model in ("ann", "single_step", "temporal"):
        accs = [
            json.loads((Path(d) / "metrics.json").read_text())["test_acc"]
            for d in runs.loc[runs.model == model, "run_dir"]
        ]
        assert table.loc[model, "test_acc_mean"] == pytest.approx(statistics.mean(accs))
        assert table.loc[model, "test_acc_std"] == pytest.approx(statistics.stdev(accs))
        assert table.loc[model, "n_runs"] == 2 and table.loc[model, "seeds"] == "0,1"
        assert table.loc[model, "epochs"] == 1
    assert "synops_per_sample" not in table or table["synops_per_sample"].notna().all()
    assert mixed_groups(runs) == []  # groups differ only in the seed
    mixed = dict(mixed_groups(runs, ["neuron"]))  # single-step and temporal in one group
    assert {"model.name", "model.num_steps", "encoding.name"} <= set(mixed["leaky"])

    # a synthetic table: exact numbers, and the formatting of mean ± std in %
    df = pd.DataFrame(
        {
            "model": ["ann", "ann", "ann", "temporal"],
            "encoding": [None, None, None, "rate"],
            "neuron": [None, None, None, "leaky"],
            "seed": [0, 1, 2, 0],
            "test_acc": [0.90, 0.80, 0.85, 0.5],
            "epochs_completed": [2, 2, 2, 3],
            "time_per_epoch_s": [1.0, 2.0, 3.0, 10.0],
        }
    )
    t = compare(df)
    assert t["test_acc_mean"].tolist() == pytest.approx([0.85, 0.5])
    assert t["test_acc_std"].iloc[0] == pytest.approx(0.05) and math.isnan(t["test_acc_std"][1])
    assert t["time_per_epoch_s"].tolist() == pytest.approx([2.0, 10.0])
    shown = format_compare(t)
    assert shown["Test Accuracy (%)"].tolist() == ["85.00 ± 5.00", "50.00"]
    assert shown["model"].tolist() == ["ANN", "Temporal SNN"]
    md = to_markdown(shown)
    assert md.splitlines()[2].startswith("| ANN | – | – | 85.00 ± 5.00 | 3 | 0,1,2 | 2 |")
    assert r"85.00 $\pm$ 5.00" in to_latex(shown)
    with pytest.raises(ValueError, match="grouping key 'colour'"):
        compare(df, by=["colour"])
    with pytest.raises(ValueError, match="allowed: test_acc"):
        compare(df, metric="accuracy")


def test_study_table_layout(multirun):
    runs = collect([multirun]).completed
    t = study_table(runs)
    assert list(t.columns) == ["Model", "Timesteps", "Epochs", "Test Accuracy", "Model Type"]
    assert t["Model"].tolist() == ["ANN", "Single-step SNN", "Temporal SNN"]
    assert t["Timesteps"].tolist() == ["–", "1", "5"]
    assert t["Model Type"].tolist() == ["ANN (non-spiking)", "SNN (spiking)", "SNN (spiking)"]
    ann = runs[runs.model == "ann"]["test_acc"]
    assert t["Test Accuracy"][0] == (f"{100 * ann.mean():.2f} ± {100 * ann.std():.2f} % (n=2)")


def _with_spiking(multirun: Path, dst: Path) -> Path:
    """Copies of the multirun's records with a `spiking` section of known values."""
    shutil.copytree(multirun, dst)
    for i, path in enumerate(sorted(dst.rglob("metrics.json"))):
        rec = json.loads(path.read_text())
        T = rec["config"]["model"]["num_steps"] or 1
        rec["spiking"] = {
            "synops_per_sample": 1000.0 * (i + 1),
            "energy_per_inference_uj": 0.5 * (i + 1),
            "energy_model": {"mac_pj": 4.6, "ac_pj": 0.9},
            "latency_curve": (
                [rec["test_acc"] * (t + 1) / T for t in range(T)]
                if rec["model"] == "temporal"
                else None
            ),
        }
        path.write_text(json.dumps(rec))
    return dst


def _strip_spiking(multirun: Path, dst: Path) -> Path:
    shutil.copytree(multirun, dst)
    for path in dst.rglob("metrics.json"):
        rec = json.loads(path.read_text())
        rec.pop("spiking", None)
        path.write_text(json.dumps(rec))
    return dst


def test_spiking_columns_and_figures(multirun, tmp_path):
    col = collect([_with_spiking(multirun, tmp_path / "runs")])
    runs = col.completed
    table = compare(runs).set_index("model")
    for model in ("ann", "single_step", "temporal"):
        sel = runs[runs.model == model]
        assert table.loc[model, "energy_per_inference_uj"] == pytest.approx(
            sel["energy_per_inference_uj"].mean()
        )
        assert table.loc[model, "synops_per_sample"] == pytest.approx(
            sel["synops_per_sample"].mean()
        )
    shown = format_compare(compare(runs))
    assert {"SynOps / sample", "Energy / inference (µJ)"} <= set(shown.columns)
    assert runs["energy_model"].iloc[0] == "MAC 4.6 pJ, AC 0.9 pJ"
    for fn, name in ((figures.energy_accuracy, "e.png"), (figures.latency_curves, "l.png")):
        path = fn(runs, tmp_path / name)
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000
    # runs recorded before spiking metrics existed: nothing to draw, no column, no crash
    plain = collect([_strip_spiking(multirun, tmp_path / "plain")]).completed
    assert plain["energy_per_inference_uj"].isna().all()
    assert figures.energy_accuracy(plain, tmp_path / "x.png") is None
    assert figures.latency_curves(plain, tmp_path / "y.png") is None
    assert "synops_per_sample" not in compare(plain)


def _png_ok(path) -> bool:
    path = Path(path)
    return path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000


def test_every_figure_writes_a_png(multirun, tmp_path):
    col = collect([multirun])
    runs = col.completed
    assert _png_ok(figures.accuracy_bars(runs, tmp_path / "bars.png"))
    assert _png_ok(figures.accuracy_bars(runs, tmp_path / "b2.png", ["model", "T"], "best_val_acc"))
    assert _png_ok(figures.loss_curves(col.completed_history, tmp_path / "loss.png"))
    raster_run = figures.choose_raster_run(col.runs)
    assert "11-00-00" in raster_run  # a temporal run
    spk = figures.output_spikes(raster_run, n_digits=3)
    assert spk["spikes"].shape == (5, 3, 10) and set(spk["spikes"].ravel()) <= {0, 1}
    assert _png_ok(figures.spike_raster(raster_run, tmp_path / "raster.png", n_digits=3))
    assert figures.swept_params(runs) == ["config.model.name"]
    assert figures.confounded_with(runs, "config.model.name") == ["config.model.num_steps"]
    assert _png_ok(figures.sweep_plot(runs, tmp_path / "sweep.png"))
    one_model = runs[runs.model == "ann"]
    assert figures.sweep_plot(one_model, tmp_path / "none.png") is None


def test_sweep_params_come_from_overrides_seeds_excluded(tmp_path):
    rows = []
    for beta in (0.5, 0.7, 0.9):
        for lr in (1e-3, 1e-2):
            for seed in (0, 1):
                ov = [f"neuron.beta={beta}", f"optimizer.lr={lr}", f"trainer.seed={seed}"]
                rows.append(
                    {
                        "config.neuron.beta": beta,
                        "config.optimizer.lr": lr,
                        "config.trainer.seed": seed,
                        "config.model.name": "temporal",
                        "overrides": json.dumps([*ov, "optuna.trial=3"]),
                        "best_val_acc": 0.5 + beta / 10 + lr,
                    }
                )
    runs = pd.DataFrame(rows)
    assert figures.swept_params(runs) == ["config.neuron.beta", "config.optimizer.lr"]
    assert _png_ok(figures.sweep_plot(runs, tmp_path / "sweep.png"))
    # without overrides (runs made by calling run() directly): every varying config key
    runs["overrides"] = "[]"
    assert figures.swept_params(runs) == ["config.neuron.beta", "config.optimizer.lr"]


def _optuna_study(db: Path, n_trials: int = 8) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="snnbench",
        storage=f"sqlite:///{db}",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial):
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
        beta = trial.suggest_float("neuron.beta", 0.5, 0.99)
        return 0.9 - (math.log10(lr) + 3) ** 2 * 0.05 + 0.01 * beta

    study.optimize(objective, n_trials=n_trials)


def test_optuna_plots_from_sqlite_storage(tmp_path):
    db = tmp_path / "sweep" / "optuna.db"
    db.parent.mkdir()
    _optuna_study(db)
    pngs, notes = figures.optuna_plots(db, tmp_path / "out")
    assert notes == [] and [p.name for p in pngs] == [
        "optuna_history_sweep.png",
        "optuna_importance_sweep.png",
    ]
    assert all(_png_ok(p) for p in pngs)
    _, notes = figures.optuna_plots(db, tmp_path / "out", study_name="other")
    assert "no study named 'other'" in notes[0]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_cli_report_on_multirun(multirun, mixed, tmp_path):
    shutil.copytree(multirun, tmp_path / "multirun")
    _optuna_study(tmp_path / "multirun" / "optuna.db", n_trials=4)
    out = tmp_path / "report"
    res = _cli(str(tmp_path / "multirun"), str(mixed), "--out", str(out))
    assert res.returncode == 0, res.stderr
    md = (out / "report.md").read_text()
    for png in (
        "accuracy_bars",
        "loss_curves",
        "spike_raster",
        "sweep",
        "optuna_history_multirun",
        "optuna_importance_multirun",
    ):
        assert f"]({png}.png)" in md and _png_ok(out / f"{png}.png")
    assert "| Temporal SNN | rate | leaky |" in md
    assert "| Model | Timesteps | Epochs | Test Accuracy | Model Type |" in md
    assert "1 failed, 1 running, 1 pruned, 1 partial, 2 corrupt, 1 empty" in md
    assert "TrainingDiverged" in md
    cmp = pd.read_csv(out / "comparison.csv")
    assert cmp["n_runs"].tolist() == [3, 2, 3]  # ann 2 + ok_ann, single-step, temporal 2 + 1
    for name in ("runs.csv", "history.csv", "study_table.csv", "comparison.tex", "left_out.csv"):
        assert (out / name).stat().st_size > 0

    res = _cli(
        str(multirun), "--out", str(tmp_path / "r2"), "--by", "model,T", "--metric", "best_val_acc"
    )
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "r2" / "report.md").read_text()
    assert "Best Validation Accuracy" in md and "| model | T |" in md


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/nope"], "nope: no such file or directory"),
        (["{tmp}"], "holds no run"),
        (["{runs}", "--by", "model,colour"], "grouping key 'colour' is not known"),
        (["{runs}", "--metric", "accuracy"], "metric 'accuracy' is not known"),
    ],
)
def test_cli_bad_input_is_one_line(multirun, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, runs=multirun) for a in args]
    out = tmp_path / "out"
    res = _cli(*args, "--out", str(out))
    assert res.returncode == 2
    assert res.stderr.startswith("analysis: error:") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_notebook_executes(multirun, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb_path = ROOT / "analysis" / "results.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    old = {k: os.environ.get(k) for k in ("SNNBENCH_RUNS", "SNNBENCH_REPORT", "PYTHONPATH")}
    os.environ["SNNBENCH_RUNS"] = str(multirun)
    os.environ["SNNBENCH_REPORT"] = str(tmp_path / "nb")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), old["PYTHONPATH"]]))
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # bars, curves, raster, sweep
    text = "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("text")
    )
    assert "6 readable runs, 6 completed" in text
    for png in ("accuracy_bars", "loss_curves", "spike_raster", "sweep"):
        assert _png_ok(tmp_path / "nb" / f"{png}.png")
