"""The study's report: ``python -m analysis.study ROOT [--out DIR]`` (``make study`` runs it).

Reads what ``python -m snnbench.study`` recorded under ROOT (default ``docs/results``) and
writes ``README.md`` (the report), ``runs.csv`` (one row per run, ``part`` naming the part of
the study that made it) and the figures into ``--out`` (default: ROOT). Every section says
how many of its runs are recorded, so a study still in progress gives a partial report.
Runs are chosen and searched on validation accuracy; test accuracy appears in tables only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import figures  # noqa: E402
from analysis.collect import Collection, NoRunsError, collect  # noqa: E402
from analysis.tables import MODEL_NAMES, to_markdown  # noqa: E402
from snnbench.config import ConfigError  # noqa: E402
from snnbench.studies.plan import StudyPlan, load_plan  # noqa: E402

#: The study's three models (rows of the report's tables).
MODELS = ("ann", "single_step", "temporal")

#: Round two's targets for the tuned recipes (test accuracy, %, mean of 3 seeds); the
#: temporal SNN must also be within :data:`ROUND2_GAP` of the round-two ANN, at T <= 10, with
#: an estimated energy per inference below the ANN's.
ROUND2_TARGETS = {"ann": 98.9, "single_step": 98.4, "temporal": 98.8}
ROUND2_GAP = 0.1
#: Points by which the last epoch's training accuracy (on augmented batches) may exceed
#: its validation accuracy before a tuned recipe reads as overfitting.
FIT_GAP = 0.5
#: Round two's convolutional models: conv_snn's tuned recipe must reach CONV_TARGET (test
#: accuracy %, MNIST, mean of 3 seeds) and be within CONV_GAP points of conv_ann's.
CONV_MODELS = ("conv_ann", "conv_snn")
CONV_TARGET = 99.3
CONV_GAP = 0.2
#: The plan parts of the conv comparison (their runs' tags are read from the plan) and the
#: search part of each conv model.
CONV_PARTS = {"reproduction": "conv_reproduction", "tuned": "conv_tuned", "fashion": "conv_fashion"}
CONV_SEARCHES = {"conv_ann": "search2_conv_ann", "conv_snn": "search2_conv_snn"}
#: A cell whose runs have no completed record yet.
NOT_RUN = "not run yet"
#: The line above the precision table (report and README).
PRECISION_LINE = (
    "The round-two temporal recipe with its dense matmuls in bfloat16 "
    "(`trainer.precision=bf16-mixed`, part `precision2`), beside float32:"
)
#: What the study reported (test accuracy, 10 epochs), quoted beside our numbers.
STUDY_REPORTED = {"ann": 98.0, "single_step": 97.0, "temporal": 97.0}
#: Targets of the tuned recipes (test accuracy %, mean of 3 seeds).
TUNED_TARGETS = {"ann": 98.3, "single_step": 98.0, "temporal": 98.4}
#: Columns of runs.csv besides ``part``.
CSV_COLUMNS = (
    "run",
    "status",
    "dataset",
    "model",
    "T",
    "beta",
    "lr",
    "config.optimizer.scheduler",
    "config.optimizer.weight_decay",
    "seed",
    "epochs_completed",
    "best_epoch",
    "best_val_acc",
    "test_acc",
    "final_test_acc",
    "time_per_epoch_s",
    "train_time_s",
    "synops_per_sample",
    "energy_per_inference_uj",
    "settle_step_mean",
)
RECIPE_KEYS = (
    "config.model.num_steps",
    "config.neuron.beta",
    "config.optimizer.lr",
    "config.optimizer.scheduler",
    "config.optimizer.weight_decay",
)


def _pct(values: pd.Series) -> str:
    """``mean ± s.d.`` of accuracies (fractions) in %, with the run count."""
    v = pd.to_numeric(values, errors="coerce").dropna() * 100
    if v.empty:
        return "–"
    if len(v) == 1:
        return f"{v.iloc[0]:.2f} (n=1)"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f} (n={len(v)})"


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "–"
    x = float(x)
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"


def _recipe(row: pd.Series) -> str:
    """The searched values of a run, as a short text (``T=23, beta=0.805, lr=7.51e-04``)."""
    parts = []
    model = row.get("model")
    for key in RECIPE_KEYS:
        name = key.split(".")[-1]
        if model != "temporal" and name == "num_steps":
            continue
        if model == "ann" and name == "beta":
            continue
        if model != "ann" and name == "weight_decay":
            continue
        text = figures._fmt(row.get(key), name)
        if text is not None:
            parts.append(f"{'T' if name == 'num_steps' else name}={text}")
    return ", ".join(parts)


def runs_table(col: Collection) -> pd.DataFrame:
    """One row per run (any status) with its part (``tag``) and the main numbers."""
    runs = col.runs
    if runs.empty:
        return pd.DataFrame(columns=["part", *CSV_COLUMNS])
    df = runs.copy()
    df["part"] = df["tag"].fillna("untagged")
    cols = ["part", *(c for c in CSV_COLUMNS if c in df.columns)]
    return df[cols].sort_values(["part", "run"], kind="stable").reset_index(drop=True)


class Report:
    """Markdown sections and figures written into ``out``."""

    def __init__(self, root: Path, out: Path, col: Collection):
        self.root, self.out, self.col = root, out, col
        self.fig_dir = out / "figures"
        self.lines: list[str] = []
        runs = col.completed.copy()
        if not runs.empty:
            runs["part"] = runs["tag"].fillna("untagged")
        self.runs = runs
        self.all = col.runs.copy() if not col.runs.empty else col.runs
        if not self.all.empty:
            self.all["part"] = self.all["tag"].fillna("untagged")

    # helpers
    def part(self, *names: str, dataset: str | None = "mnist") -> pd.DataFrame:
        if self.runs.empty:
            return self.runs
        df = self.runs[self.runs["part"].isin(names)]
        if dataset is not None:
            df = df[df["dataset"] == dataset]
        return df

    def recorded(self, *names: str) -> str:
        """``k of n runs completed`` for the parts (all statuses counted in n)."""
        if self.all.empty:
            return "no run recorded yet"
        n = int(self.all["part"].isin(names).sum())
        k = len(self.part(*names, dataset=None))
        return f"{k} of {n} recorded runs completed" if n else "no run recorded yet"

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, path: Path | None, caption: str, missing: str) -> None:
        if path is None:
            self.add(f"*{missing}*", "")
        else:
            rel = path.relative_to(self.out).as_posix()
            self.add(f"![{caption}]({rel})", "", f"*{caption}*", "")

    # sections
    def reproduction(self) -> None:
        self.add("## 1. The study reproduced (study settings, 10 epochs)", "")
        df = self.part("study")
        self.add(f"Runs: {self.recorded('study')}.", "")
        rows = []
        for m in MODELS:
            g = df[df["model"] == m]
            rows.append(
                {
                    "Model": MODEL_NAMES[m],
                    "Study reported (%)": f"~{STUDY_REPORTED[m]:.0f}",
                    "Test acc. (%)": _pct(g["test_acc"]),
                    "Best val. acc. (%)": _pct(g["best_val_acc"]),
                    "Seeds": ",".join(str(int(s)) for s in sorted(g["seed"].dropna())) or "–",
                    "Train s/epoch": _num(g["time_per_epoch_s"].mean()),
                    "Energy/inference (µJ)": _num(g["energy_per_inference_uj"].mean()),
                }
            )
        self.add(to_markdown(pd.DataFrame(rows)), "")
        self.add(
            "Test accuracy is that of the best-validation epoch's weights (mean ± sample s.d. "
            "over seeds). Energy is an estimate from operation counts (README, Spiking "
            "metrics), not a measurement.",
            "",
        )

    def tuned(self) -> None:
        self.add("## 2. Tuned recipes (best validation accuracy of each search, 10 epochs)", "")
        df = self.part("tuned_ann", "tuned_single_step", "tuned_temporal")
        self.add(f"Runs: {self.recorded('tuned_ann', 'tuned_single_step', 'tuned_temporal')}.", "")
        rows = []
        for m in MODELS:
            g = df[df["model"] == m]
            mean = pd.to_numeric(g["test_acc"], errors="coerce").mean() * 100
            target = TUNED_TARGETS[m]
            verdict = "–" if math.isnan(mean) else met_or_missed(mean, target)
            rows.append(
                {
                    "Model": MODEL_NAMES[m],
                    "Recipe": _recipe(g.iloc[0]) if len(g) else "(search not finished)",
                    "Test acc. (%)": _pct(g["test_acc"]),
                    "Best val. acc. (%)": _pct(g["best_val_acc"]),
                    "Target (%)": f"≥ {target}",
                    "Target": verdict,
                    "Energy/inference (µJ)": _num(g["energy_per_inference_uj"].mean()),
                }
            )
        self.add(to_markdown(pd.DataFrame(rows)), "")
        both = self.part("study", "tuned_ann", "tuned_single_step", "tuned_temporal")
        if not both.empty:
            both = both.assign(recipe=np.where(both["part"] == "study", "study settings", "tuned"))
            path = figures.accuracy_bars(
                both, self.fig_dir / "accuracy_bars.png", by=("model", "recipe")
            )
            self.figure(
                path,
                "Test accuracy per model, study settings vs tuned recipe (mean ± s.d. over seeds)",
                "no completed run yet",
            )

    def curves_and_raster(self) -> None:
        self.add("## 3. The study's figures: training curves and output spikes", "")
        study = self.part("study")
        hist = self.col.completed_history
        if not hist.empty and not study.empty:
            hist = hist[hist["run_dir"].isin(set(study["run_dir"]))]
        path = figures.loss_curves(hist, self.fig_dir / "loss_curves.png", by=("model",))
        self.figure(
            path,
            "Training loss and validation accuracy per epoch, study settings (mean ± s.d.)",
            "no completed study run yet",
        )
        pool = self.part("study", "tuned_temporal", "tuned_single_step")
        run = figures.choose_raster_run(pool) if not pool.empty else None
        if run is None:
            self.add("*no SNN run with saved best weights yet: no raster*", "")
            return
        path = figures.spike_raster(run, self.fig_dir / "spike_raster.png")
        rel = self._rel(run)
        self.figure(
            path,
            f"Output spikes of the SNN run with the best validation accuracy ({rel})",
            "",
        )

    def searches(self) -> None:
        self.add("## 4. Searches (Optuna, on validation accuracy)", "")
        rows = []
        for m in MODELS:
            db = self.root / "search" / m / "optuna.db"
            trials = self.all[self.all["part"] == f"search_{m}"] if not self.all.empty else None
            if not db.is_file():
                rows.append({"Model": MODEL_NAMES[m], "Trials": "not started"})
                continue
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(study_name=f"study_{m}", storage=f"sqlite:///{db}")
            states: dict[str, int] = {}
            for t in study.trials:
                states[t.state.name] = states.get(t.state.name, 0) + 1
            complete = [t for t in study.trials if t.state.name == "COMPLETE"]
            best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
            rows.append(
                {
                    "Model": MODEL_NAMES[m],
                    "Trials": ", ".join(f"{v} {k.lower()}" for k, v in sorted(states.items())),
                    "Best val. acc. (%)": f"{100 * best.value:.2f}" if best else "–",
                    "Best trial": (
                        f"#{best.number}: "
                        + ", ".join(
                            f"{k.split('.')[-1]}={figures._fmt(v, k)}"
                            for k, v in sorted(best.params.items())
                        )
                        if best
                        else "–"
                    ),
                }
            )
            paths, _ = figures.optuna_plots(
                db, self.fig_dir, study_name=f"study_{m}", objective="best validation accuracy"
            )
            for p in paths:
                kind = "history" if "history" in p.name else "importance"
                self.figure(p, f"{MODEL_NAMES[m]} search: {kind}", "")
            if trials is not None and len(trials):
                done = trials[trials["usable"]]
                if len(done) >= 3:
                    p = figures.sweep_plot(
                        done, self.fig_dir / f"search_{m}_params.png", "best_val_acc"
                    )
                    self.figure(
                        p,
                        f"{MODEL_NAMES[m]} search: best validation accuracy vs each searched "
                        "parameter (completed trials, 3 epochs each)",
                        "",
                    )
        self.add(to_markdown(pd.DataFrame(rows)), "")

    def t_sweep(self) -> None:
        self.add("## 5. How many time steps? The best temporal recipe at each T", "")
        df = self.part("t_sweep")
        self.add(f"Runs: {self.recorded('t_sweep')}.", "")
        if df.empty:
            self.add("*no completed T-sweep run yet*", "")
            return
        rows = []
        for t, g in df.groupby("T", sort=True):
            rows.append(
                {
                    "T": int(t),
                    "Test acc. (%)": _pct(g["test_acc"]),
                    "Best val. acc. (%)": _pct(g["best_val_acc"]),
                    "Train s/epoch": _num(g["time_per_epoch_s"].mean()),
                    "SynOps/inference": _num(g["synops_per_sample"].mean()),
                    "Energy/inference (µJ)": _num(g["energy_per_inference_uj"].mean()),
                    "Settle step": _num(g["settle_step_mean"].mean()),
                }
            )
        self.add(to_markdown(pd.DataFrame(rows)), "")
        seeds = df.groupby("T")["seed"].nunique()
        if seeds.nunique() > 1:
            few = ", ".join(f"T={int(t)}: {n}" for t, n in seeds.items())
            self.add(f"Seeds per T differ (compute): {few}.", "")
        self.figure(
            t_sweep_figure(df, self.fig_dir / "t_sweep.png"),
            "Accuracy, energy and training time against the number of time steps T",
            "",
        )

    def study_20ep(self) -> None:
        self.add("## 6. Is the study's temporal SNN under-trained? (20 epochs)", "")
        long = self.part("study_20ep")
        short = self.part("study")
        short = short[(short["model"] == "temporal") & (short["seed"] == 0)]
        self.add(f"Runs: {self.recorded('study_20ep')}.", "")
        if long.empty:
            self.add("*the 20-epoch run has not completed yet*", "")
            return
        r = long.iloc[0]
        self.add(
            f"Seed 0, study settings, 20 epochs: best validation {100 * r['best_val_acc']:.2f} % "
            f"at epoch {int(r['best_epoch'])}, test {100 * r['test_acc']:.2f} %"
            + (
                f" (10 epochs: validation {100 * short.iloc[0]['best_val_acc']:.2f} %, test "
                f"{100 * short.iloc[0]['test_acc']:.2f} %)."
                if len(short)
                else "."
            ),
            "",
        )
        hist = self.col.completed_history
        hist = hist[hist["run_dir"].isin(set(long["run_dir"]) | set(short["run_dir"]))]
        hist = hist.assign(
            epochs=hist["run_dir"].map(
                lambda d: "20 epochs" if d in set(long["run_dir"]) else "10 epochs"
            )
        )
        path = figures.loss_curves(hist, self.fig_dir / "study_20ep.png", by=("epochs",))
        self.figure(path, "Temporal SNN, study settings, 10 vs 20 epochs (seed 0)", "")

    def fashion(self) -> None:
        self.add("## 7. Fashion-MNIST (study settings and tuned recipes)", "")
        df = self.part("fashion_study", "fashion_tuned", dataset="fashion_mnist")
        self.add(f"Runs: {self.recorded('fashion_study', 'fashion_tuned')}.", "")
        rows = []
        for m in MODELS:
            for part, name in (("fashion_study", "study settings"), ("fashion_tuned", "tuned")):
                g = df[(df["model"] == m) & (df["part"] == part)]
                rows.append(
                    {
                        "Model": MODEL_NAMES[m],
                        "Recipe": name,
                        "Test acc. (%)": _pct(g["test_acc"]),
                        "Best val. acc. (%)": _pct(g["best_val_acc"]),
                    }
                )
        self.add(to_markdown(pd.DataFrame(rows)), "")

    def round_two(self) -> None:
        self.add("## 10. Round two: regularised searches at the full 10 epochs, tuned vs tuned", "")
        self.add(
            "Every model's search trains each trial for the 10 epochs its recipe is trained for "
            "(AdamW, cosine over the 10 epochs, median pruning from epoch 3) and searches the "
            "same regularisation knobs (weight decay, random shift / small affine of the "
            "training batches, label smoothing); the best trial's params are retrained with "
            "seeds 0, 1, 2.",
            "",
        )
        rows = []
        for m in MODELS:
            rows.append(self._search_row(self.root / "round2" / "search" / m, f"study2_{m}", m))
        self.add("Searches:", "", to_markdown(pd.DataFrame(rows)), "")
        self.add(f"Runs: {self.recorded(*(f'tuned2_{m}' for m in MODELS))}.", "")
        table = round_two_table(self.runs)
        self.add(to_markdown(table), "")
        self.fits(table)
        df = self.part("t_sweep2")
        if not df.empty:
            self.add(f"The round-two temporal recipe at each T (started {recorded_dates(df)}):",
                     "", to_markdown(t_table(df)), "")  # fmt: skip
        if (self.runs["part"] == "precision2_temporal").any():
            self.add(PRECISION_LINE, "", to_markdown(precision_table(self.runs)), "")
        fashion = self.part("fashion_tuned", "fashion2_tuned", dataset="fashion_mnist")
        if not fashion.empty:
            rows = []
            for m in MODELS:
                for part, name in (("fashion_tuned", "round one"), ("fashion2_tuned", "round two")):
                    g = fashion[(fashion["model"] == m) & (fashion["part"] == part)]
                    rows.append({"Model": MODEL_NAMES[m], "Recipe": name,
                                 "Test acc. (%)": _pct(g["test_acc"])})  # fmt: skip
            self.add("Fashion-MNIST, the MNIST recipes:", "", to_markdown(pd.DataFrame(rows)), "")

    def fits(self, table: pd.DataFrame) -> None:
        """How the round-two tuned runs fit, and what that says about each missed target
        (``table``: :func:`round_two_table` of the runs, whose verdicts it reads)."""
        history = self.col.completed_history
        if self.runs.empty or history.empty:
            return
        rows = fit_rows(self.part(*(f"tuned2_{m}" for m in MODELS)), history,
                        {m: f"tuned2_{m}" for m in MODELS})  # fmt: skip
        if rows.empty:
            return
        self.add(
            "How the tuned runs fit (means over their seeds; the training accuracy is the "
            "running accuracy over the last epoch's augmented training batches, not a clean "
            "pass):",
            "",
            to_markdown(fit_table(rows)),
            "",
        )
        verdicts = table.set_index("model")["target"]
        lines = []
        for r in rows.itertuples():
            verdict = str(verdicts.get(MODEL_NAMES[r.model], ""))
            if "missed" not in verdict:
                continue
            reading = fit_reading(r)
            if r.model == "temporal":
                gain = t_gain(self.part("t_sweep2"))
                reading += f"; {gain}" if gain else ""
            lines.append(f"- {MODEL_NAMES[r.model]} (target {verdict.split(';')[0]}): {reading}.")
        if lines:
            self.add("What the runs say about the missed targets:", "", *lines, "")

    def conv(self) -> None:
        self.add("## 11. Round two: convolutional models, conv ANN vs conv SNN", "")
        self.add(
            "snnTorch's tutorial CSNN (12C5-MP2-64C5-MP2-FC10) with leaky neurons (`conv_snn`) "
            "and the same layers with ReLU (`conv_ann`): at their defaults (the conv SNN under "
            "direct coding at T=5, where its first convolution runs once per sample), then "
            "each searched the round-two way (10-epoch trials, median pruning, the same "
            "regularisation knobs; the conv SNN's T only over 2–6, to fit the budget) and its "
            "best recipe retrained with seeds 0, 1, 2 on MNIST and Fashion-MNIST. Target: the "
            f"conv SNN at ≥ {CONV_TARGET} % and within {CONV_GAP} point of the conv ANN.",
            "",
        )
        plan = study_plan(None)
        rows = []
        for m, part in CONV_SEARCHES.items():
            try:
                search = plan.part(part).search
            except KeyError:
                search = None
            if search is None:
                rows.append({"Model": MODEL_NAMES[m], "Trials": "not in the plan"})
                continue
            rows.append(self._search_row(self.root / search.path, search.study, m))
        self.add("Searches:", "", to_markdown(pd.DataFrame(rows)), "")
        self.add(f"Runs: {self.recorded(*conv_tags(plan))}.", "")
        self.add(to_markdown(conv_table(self.runs, plan)), "")

    def _search_row(self, folder: Path, study_name: str, model: str) -> dict[str, str]:
        """A search's trial states and best trial (not started: says so)."""
        db = folder / "optuna.db"
        if not db.is_file():
            return {"Model": MODEL_NAMES[model], "Trials": "not started"}
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
        states: dict[str, int] = {}
        for t in study.trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
        params = ", ".join(
            f"{k.split('.')[-1]}={figures._fmt(v, k)}" for k, v in sorted(best.params.items())
        ) if best else "–"  # fmt: skip
        return {
            "Model": MODEL_NAMES[model],
            "Trials": ", ".join(f"{v} {k.lower()}" for k, v in sorted(states.items())),
            "Best val. acc. (%)": f"{100 * best.value:.2f}" if best else "–",
            "Best trial": f"#{best.number}: {params}" if best else "–",
        }

    def energy_latency(self) -> None:
        self.add("## 8. Energy and latency", "")
        df = self.part("study", "tuned_ann", "tuned_single_step", "tuned_temporal")
        if df.empty:
            self.add("*no completed run yet*", "")
            return
        df = df.assign(recipe=np.where(df["part"] == "study", "study", "tuned"))
        path = figures.energy_accuracy(
            df, self.fig_dir / "energy_accuracy.png", by=("model", "recipe")
        )
        self.figure(path, "Test accuracy vs estimated energy per inference (one dot per run)", "")
        path = figures.latency_curves(
            df, self.fig_dir / "latency_curves.png", by=("model", "recipe")
        )
        self.figure(path, "Test accuracy when the output is read after t steps", "")

    def provenance(self) -> None:
        self.add("## 9. Machine, versions and wall time", "")
        log_dir = self.root / "study_log"
        rows = []
        for part_file in sorted(log_dir.glob("*.json")):
            if part_file.name == "best.json":
                continue
            entry = json.loads(part_file.read_text(encoding="utf-8"))
            part = entry.get("part", part_file.stem)
            plan = study_plan(entry.get("plan"))
            recorded_h = part_seconds(self.root, self.all, part, plan) / 3600
            rows.append(
                {
                    "Part": part,
                    "Items done": f"{entry.get('done', '–')} of {entry.get('items', '–')}",
                    "Runner wall time (h)": f"{entry.get('wall_s', 0) / 3600:.2f}",
                    "Time in the records (h)": f"{recorded_h:.2f}",
                }
            )
        if rows:
            self.add(to_markdown(pd.DataFrame(rows)), "")
            self.add(
                "Runner wall time is summed over every session that worked on a part, while "
                "its runner was alive (a runner stopped with its session may lose up to a "
                "minute of it; runners of older versions lost the item they were running). "
                "Time in the records: the training and validation time of every recorded "
                "epoch of the part's runs, or, for a search, the start-to-end time of its "
                "Optuna trials (epochs cut short by a stopped session are in neither). Parts "
                "ran two at a time (one thread each) on a machine shared with other work, so "
                "per-epoch times in these tables are upper bounds — `python -m snnbench.bench` "
                "measures speed properly.",
                "",
            )
        sessions = log_dir / "sessions.jsonl"
        if sessions.is_file():
            lines = [json.loads(s) for s in sessions.read_text().splitlines() if s.strip()]
            if lines:
                last = lines[-1]
                m, v = last["machine"], last["versions"]
                self.add(
                    f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['os']}. "
                    f"Versions: Python {v.get('python')}, torch {v.get('torch')}, snnTorch "
                    f"{v.get('snntorch')}, optuna {v.get('optuna')}. Sessions: {len(lines)} "
                    f"(load average at their starts: "
                    f"{', '.join(str(s['load_average'][0]) for s in lines)}).",
                    "",
                )
        counts = self.col.problem_counts()
        if counts:
            self.add(
                "Runs not in the tables: "
                + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
                + " (pruned search trials are expected).",
                "",
            )
            others = [p for p in self.col.problems if p.kind != "pruned"]
            if others:
                shown = [f"{self._rel(p.run_dir)} ({p.kind}: {p.reason})" for p in others[:12]]
                note = (
                    " A run left `running` was stopped mid-way; in a search, such a trial is "
                    "failed by heartbeat and a retry runs in its place."
                    if any(p.kind == "running" for p in others)
                    else ""
                )
                more = "; …" if len(others) > 12 else ""
                self.add(f"Not pruned: {'; '.join(shown)}{more}.{note}", "")

    def _rel(self, run_dir: str) -> str:
        try:
            return Path(run_dir).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(run_dir)


def study_plan(name: str | None) -> StudyPlan:
    """The plan a study log names (the published one when it names none or an unknown one:
    the first logs said ``full`` for it)."""
    try:
        return load_plan(name or "published")
    except ConfigError:
        return load_plan("published")


def recorded_dates(df: pd.DataFrame) -> str:
    """When the runs of ``df`` started (UTC), as ``2026-11-29 13:21–18:19 UTC`` or
    ``2026-11-29 13:21 to 2026-12-01 01:00 UTC``: their timings are those of the code of that
    time; ``unknown`` when none says."""
    col = df["started_at"] if "started_at" in df else pd.Series(dtype=object)
    times = pd.to_datetime(col.dropna(), utc=True, errors="coerce", format="ISO8601").dropna()
    if times.empty:
        return "unknown"
    first, last = times.min(), times.max()
    if first.date() == last.date():
        return f"{first:%Y-%m-%d %H:%M}–{last:%H:%M} UTC"
    return f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"


def t_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per T: n, test and best validation accuracy (mean ± s.d. over the n runs),
    training time per epoch and estimated energy (means)."""
    rows = []
    for t, g in df.groupby("T", sort=True):
        rows.append(
            {
                "T": int(t),
                "n (seeds)": len(g),
                "test acc. (%)": _pct(g["test_acc"]).split(" (n=")[0],
                "best val. acc. (%)": _pct(g["best_val_acc"]).split(" (n=")[0],
                "train s/epoch": _num(g["time_per_epoch_s"].mean()),
                "energy/inference (µJ)": _num(g["energy_per_inference_uj"].mean()),
            }
        )
    return pd.DataFrame(rows)


def met_or_missed(value: float, target: float) -> str:
    """``met (+gap)`` or ``missed by gap``, compared at the 0.01 points the tables show (a
    mean printed as the target is met, never "missed by 0.00")."""
    gap = round(round(value, 2) - target, 2) + 0.0  # + 0.0: never "-0.00"
    return f"met (+{gap:.2f})" if gap >= 0 else f"missed by {-gap:.2f}"


def fit_rows(runs: pd.DataFrame, history: pd.DataFrame, parts: dict[str, str]) -> pd.DataFrame:
    """How each model's tuned runs fit (``parts``: model -> the part of its runs): the last
    epoch's training accuracy (%, on the augmented training batches) and validation accuracy
    (%), both means over the runs, their gap (points), the best-validation epochs and the
    epoch budget. Models without runs are left out."""
    rows = []
    for m, part in parts.items():
        g = runs[(runs["part"] == part) & (runs["model"] == m)]
        h = history[history["run_dir"].isin(g["run_dir"])]
        if g.empty or h.empty:
            continue
        last = h.loc[h.groupby("run_dir")["epoch"].idxmax()]
        train = float(pd.to_numeric(last["train_acc"]).mean() * 100)
        val = float(pd.to_numeric(last["val_acc"]).mean() * 100)
        rows.append(
            {
                "model": m,
                "train": train,
                "val": val,
                "gap": train - val,
                "best_epochs": sorted(int(e) for e in g["best_epoch"]),
                "epochs": int(g["epochs"].max()),
            }
        )
    return pd.DataFrame(rows)


def fit_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`fit_rows` as the report prints it."""
    return pd.DataFrame(
        [
            {
                "Model": MODEL_NAMES[r.model],
                "train acc., last epoch (%)": f"{r.train:.2f}",
                "val. acc., last epoch (%)": f"{r.val:.2f}",
                "train − val (points)": f"{r.gap:.2f}",
                "best-validation epochs": ", ".join(map(str, r.best_epochs)) + f" of {r.epochs}",
            }
            for r in rows.itertuples()
        ]
    )


def fit_reading(row: Any) -> str:
    """What one :func:`fit_rows` row says: overfitting (train − val above :data:`FIT_GAP`),
    still improving at the end of its epoch budget, or neither."""
    epochs = ", ".join(map(str, row.best_epochs))
    if row.gap > FIT_GAP:
        return (
            f"it fits its training batches {row.gap:.2f} points better than validation and "
            f"peaks at epochs {epochs} of {row.epochs}: it overfits, so stronger "
            "regularisation is its next lever"
        )
    if all(e == row.epochs for e in row.best_epochs):
        return (
            f"it does not overfit (train − val {row.gap:.2f} points) and every seed is still "
            f"improving at its last epoch ({row.epochs}): it is limited by how far it fits in "
            f"{row.epochs} epochs, not by generalisation, so more regularisation will not help"
        )
    return (
        f"it neither overfits (train − val {row.gap:.2f} points) nor is still improving "
        f"at its last epoch (best epochs {epochs} of {row.epochs})"
    )


def t_gain(sweep: pd.DataFrame) -> str | None:
    """How much a T sweep's mean test accuracy changes from T=5 (or its smallest T) to its
    largest T, as a sentence; None with fewer than two T values."""
    means = sweep.groupby("T")["test_acc"].mean() * 100
    if len(means) < 2:
        return None
    lo = 5 if 5 in means.index else means.index.min()
    hi = means.index.max()
    return (
        f"more time steps are not the lever: the recipe's test accuracy goes from "
        f"{means[lo]:.2f} % at T={int(lo)} to {means[hi]:.2f} % at T={int(hi)} "
        f"({round(means[hi], 2) - round(means[lo], 2):+.2f} points)"
    )


def round_two_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Round one's and round two's tuned recipes side by side, with round two's targets."""
    if runs.empty:
        return pd.DataFrame()
    mnist = runs[runs["dataset"] == "mnist"]

    def of(part: str, m: str) -> pd.DataFrame:
        return mnist[(mnist["part"] == part) & (mnist["model"] == m)]

    ann = pd.to_numeric(of("tuned2_ann", "ann")["test_acc"], errors="coerce")
    ann_energy = of("tuned2_ann", "ann")["energy_per_inference_uj"].mean()
    rows = []
    for m in MODELS:
        g = of(f"tuned2_{m}", m)
        mean = pd.to_numeric(g["test_acc"], errors="coerce").mean() * 100
        energy = g["energy_per_inference_uj"].mean()
        verdict = "–"
        if not math.isnan(mean):
            verdict = met_or_missed(mean, ROUND2_TARGETS[m])
            if m == "temporal" and len(ann):
                behind = ann.mean() * 100 - mean
                t = g["T"].dropna()
                extra = [f"{behind:.2f} behind the ANN (may be ≤ {ROUND2_GAP})"]
                extra.append(f"T={int(t.iloc[0])}" if len(t) else "T=?")
                if not math.isnan(energy) and not math.isnan(ann_energy):
                    extra.append("energy " + ("<" if energy < ann_energy else "≥") + " ANN's")
                verdict += "; " + ", ".join(extra)
        rows.append(
            {
                "model": MODEL_NAMES[m],
                "round one tuned (%)": _pct(of(f"tuned_{m}", m)["test_acc"]),
                "round two tuned (%)": _pct(g["test_acc"]),
                "round two recipe": _recipe2(g.iloc[0]) if len(g) else "(not retrained yet)",
                "target": f"≥ {ROUND2_TARGETS[m]} %: {verdict}",
                "energy/inference, round two (µJ)": _num(energy),
            }
        )
    return pd.DataFrame(rows)


def precision_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The round-two temporal recipe in float32 (``tuned2_temporal``) and with
    ``trainer.precision=bf16-mixed`` (``precision2_temporal``): test accuracy, mean ± s.d."""
    if runs.empty:
        return pd.DataFrame()
    mnist = runs[(runs["dataset"] == "mnist") & (runs["model"] == "temporal")]
    rows = []
    for part, name in (("tuned2_temporal", "32 (float32)"), ("precision2_temporal", "bf16-mixed")):
        g = mnist[mnist["part"] == part]
        rows.append({"trainer.precision": name, "test acc. (%)": _pct(g["test_acc"]) if len(g)
                     else NOT_RUN})  # fmt: skip
    return pd.DataFrame(rows)


#: The searched keys of round two, as the report names them.
ROUND2_KEYS = {
    "config.model.num_steps": "T",
    "config.neuron.beta": "beta",
    "config.optimizer.lr": "lr",
    "config.optimizer.weight_decay": "wd",
    "config.augment.shift": "shift",
    "config.augment.rotate": "rotate",
    "config.augment.scale": "scale",
    "config.trainer.label_smoothing": "ls",
}


def _recipe2(row: pd.Series) -> str:
    parts = []
    for key, name in ROUND2_KEYS.items():
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if row.get("model") not in ("temporal", "conv_snn") and name in ("T", "beta"):
            continue
        parts.append(f"{name}={figures._fmt(value, key.split('.')[-1])}")
    return ", ".join(parts)


def _part_tags(plan: StudyPlan, part: str) -> tuple[str, ...]:
    """The run tags of a plan part (the part's own name when the plan has no such part)."""
    try:
        return plan.tags(part)
    except KeyError:
        return (part,)


def conv_tags(plan: StudyPlan | None = None) -> list[str]:
    """The run tags of the conv comparison's parts (reproduction, tuned, Fashion)."""
    plan = plan or study_plan(None)
    return [t for part in CONV_PARTS.values() for t in _part_tags(plan, part)]


def conv_table(runs: pd.DataFrame, plan: StudyPlan | None = None) -> pd.DataFrame:
    """The convolutional models of round two, one row each: test accuracy at defaults
    (reproduction) and of the tuned recipe on MNIST and Fashion-MNIST, the tuned recipe's
    energy estimate and epoch time, and the conv SNN's target; a cell whose runs have no
    completed record says so. ``runs``: completed runs with the ``part`` column."""
    plan = plan or study_plan(None)

    def of(kind: str, m: str, dataset: str = "mnist") -> pd.DataFrame:
        if runs.empty:
            return runs
        tags = _part_tags(plan, CONV_PARTS[kind])
        return runs[runs["part"].isin(tags) & (runs["model"] == m) & (runs["dataset"] == dataset)]

    def acc(g: pd.DataFrame) -> str:
        return _pct(g["test_acc"]) if len(g) else NOT_RUN

    means = {m: pd.to_numeric(of("tuned", m)["test_acc"], errors="coerce").mean() * 100
             if len(of("tuned", m)) else math.nan for m in CONV_MODELS}  # fmt: skip
    rows = []
    for m in CONV_MODELS:
        tuned = of("tuned", m)
        rows.append(
            {
                "model": MODEL_NAMES[m],
                "defaults (%)": acc(of("reproduction", m)),
                "tuned (%)": acc(tuned),
                "tuned recipe": _recipe2(tuned.iloc[0]) if len(tuned) else NOT_RUN,
                "Fashion-MNIST, tuned (%)": acc(of("fashion", m, "fashion_mnist")),
                "energy/inference, tuned (µJ)": (
                    _num(tuned["energy_per_inference_uj"].mean()) if len(tuned) else NOT_RUN
                ),
                "train s/epoch, tuned": (
                    _num(tuned["time_per_epoch_s"].mean()) if len(tuned) else NOT_RUN
                ),
                "target": conv_verdict(m, means["conv_snn"], means["conv_ann"]),
            }
        )
    return pd.DataFrame(rows)


def conv_verdict(model: str, snn: float, ann: float) -> str:
    """The conv target for ``model``'s row, from the tuned means (%, NaN: not run): the conv
    SNN at >= CONV_TARGET and at most CONV_GAP behind the conv ANN, each met or missed by how
    much (compared at the 0.01 points the table shows)."""
    if model != "conv_snn":
        return "– (the conv SNN's reference)"
    if math.isnan(snn):
        return f"≥ {CONV_TARGET} % and at most {CONV_GAP} behind the conv ANN: {NOT_RUN}"
    level = met_or_missed(snn, CONV_TARGET)
    if math.isnan(ann):
        return f"≥ {CONV_TARGET} %: {level}; the conv ANN {NOT_RUN}"
    behind = round(round(ann, 2) - round(snn, 2), 2) + 0.0  # as printed; never "-0.00"
    where = f"{behind:.2f} behind" if behind >= 0 else f"{-behind:.2f} ahead of"
    over = round(behind - CONV_GAP, 2)
    close = "met" if over <= 0 else f"missed by {over:.2f}"
    return f"≥ {CONV_TARGET} %: {level}; {where} the conv ANN (≤ {CONV_GAP} allowed): {close}"


def part_seconds(root: Path, runs: pd.DataFrame, part: str, plan: StudyPlan | None = None) -> float:
    """Seconds recorded by a study part of ``plan`` (default: the published one): its runs'
    epochs (training + validation) or, for a search, its Optuna trials (start to end).
    ``runs`` has the ``part`` column."""
    plan = plan or study_plan(None)
    known = part in plan.part_names
    search = plan.part(part).search if known else None
    if search is not None:
        db = root / search.path / "optuna.db"
        if not db.is_file():
            return 0.0
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=search.study, storage=f"sqlite:///{db}")
        return sum(
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.get_trials(deepcopy=False)
            if t.datetime_start is not None and t.datetime_complete is not None
        )
    if runs.empty or "epochs_time_s" not in runs:
        return 0.0
    tags = plan.tags(part) if known else (part,)
    return float(runs.loc[runs["part"].isin(tags), "epochs_time_s"].sum())


def t_sweep_figure(df: pd.DataFrame, path: Path) -> Path | None:
    """Three panels against T: test accuracy, energy per inference, training time per epoch
    (mean over seeds, whiskers ±1 s.d.)."""
    if df.empty:
        return None
    g = df.groupby("T", sort=True)
    t = np.array(sorted(df["T"].dropna().astype(int).unique()))
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    panels = (
        ("test_acc", 100.0, "Test accuracy (%)"),
        ("energy_per_inference_uj", 1.0, "Estimated energy / inference (µJ)"),
        ("time_per_epoch_s", 1.0, "Training time / epoch (s)"),
    )
    for ax, (col, scale, label) in zip(axes, panels):
        vals = pd.to_numeric(df[col], errors="coerce") * scale
        mean = vals.groupby(df["T"]).mean().reindex(t)
        sd = vals.groupby(df["T"]).std(ddof=1).reindex(t).fillna(0)
        ax.errorbar(t, mean, yerr=sd, marker="o", capsize=3, color="tab:blue")
        ax.set_xscale("log")
        ax.set_xticks(t, [str(x) for x in t])
        ax.minorticks_off()
        ax.set_xlabel("Time steps T (log scale)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if col == "test_acc":
            lo, hi = figures._accuracy_limits(mean, sd)
            ax.set_ylim(lo, hi)
            ax.set_ylabel(f"{label} — axis starts at {lo:.1f} %")
    n = g["seed"].nunique()
    fig.suptitle(
        "Best temporal recipe at each T: point = mean over seeds "
        f"({', '.join(f'T={int(k)}: {v}' for k, v in n.items())} seeds), whisker = ±1 s.d.",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def write_study_report(root: Path | str, out: Path | str | None = None) -> Path:
    """Write the study report (``README.md``), ``runs.csv`` and figures; return the report."""
    root = Path(root)
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    col = collect([root])
    table = runs_table(col)
    table.to_csv(out / "runs.csv", index=False, float_format="%.6g")
    rep = Report(root, out, col)
    rep.add(
        "# snnbench study results",
        "",
        "Three models on MNIST, 784-256-128-10, batch 128, Adam: the study reproduced, each "
        "model tuned by an Optuna search on validation accuracy, the temporal SNN swept over "
        "T, and Fashion-MNIST. Regenerate everything with `make study` (= `python -m "
        "snnbench.study`; it skips what is recorded here and continues the rest), this report "
        "alone with `python -m analysis.study docs/results`. Accuracies are in %, mean ± "
        "sample s.d. over seeds; runs are selected on validation accuracy, test accuracy is "
        "reported. `runs.csv` lists every run with the part that made it.",
        "",
    )
    rep.reproduction()
    rep.tuned()
    rep.curves_and_raster()
    rep.searches()
    rep.t_sweep()
    rep.study_20ep()
    rep.fashion()
    rep.energy_latency()
    rep.provenance()
    rep.round_two()
    rep.conv()
    path = out / "README.md"
    path.write_text("\n".join(rep.lines).rstrip() + "\n", encoding="utf-8")
    return path


#: The lines around the generated Results tables in the project's README.
BLOCK_START = "<!-- results:start (generated by python -m analysis.study --readme README.md) -->"
BLOCK_END = "<!-- results:end -->"


def results_block(col: Collection) -> str:
    """The README's Results tables, from the same records and helpers as the report: the
    headline table (study settings vs tuned recipe vs target) and the T sweep. Every cell
    is a mean ± sample s.d. over the runs it names (n)."""
    runs = col.completed.copy()
    if runs.empty:
        return "*no completed run yet*"
    runs["part"] = runs["tag"].fillna("untagged")
    runs = runs[runs["dataset"] == "mnist"]
    rows = []
    for m in MODELS:
        study = runs[(runs["part"] == "study") & (runs["model"] == m)]
        tuned = runs[(runs["part"] == f"tuned_{m}") & (runs["model"] == m)]
        mean = pd.to_numeric(tuned["test_acc"], errors="coerce").mean() * 100
        verdict = "–" if math.isnan(mean) else met_or_missed(mean, TUNED_TARGETS[m])
        rows.append(
            {
                "model": MODEL_NAMES[m],
                "study reported": f"~{STUDY_REPORTED[m]:.0f} %",
                "snnbench, study settings (%)": _pct(study["test_acc"]),
                "snnbench, tuned recipe (%)": _pct(tuned["test_acc"]),
                "tuned recipe": _recipe(tuned.iloc[0]) if len(tuned) else "–",
                "target (tuned)": f"≥ {TUNED_TARGETS[m]} %: {verdict}",
                "energy/inference, tuned (µJ)": _num(tuned["energy_per_inference_uj"].mean()),
            }
        )
    lines = [
        "Test accuracy of the best-validation epoch, mean ± sample s.d. over the n runs "
        "(seeds 0, 1, 2), MNIST, 10 epochs; energy is an estimate (mean over the same runs).",
        "",
        to_markdown(pd.DataFrame(rows)).rstrip(),
        "",
    ]
    sweep = runs[runs["part"] == "t_sweep"]
    if not sweep.empty:
        t_rows = t_table(sweep)
        lines += [
            "The tuned temporal recipe at each T (10 epochs; every column a mean over the n "
            "runs of that T; s/epoch: 1 thread, 2 runs sharing 2 cores, started "
            f"{recorded_dates(sweep)}):",
            "",
            to_markdown(t_rows).rstrip(),
            "",
        ]
    if runs["part"].str.startswith("tuned2_").any():
        lines += [
            "Round two (regularised searches at the full 10 epochs, then 10 epochs × the n "
            "seeds), beside round one's tuned recipes:",
            "",
            to_markdown(round_two_table(runs)).rstrip(),
            "",
        ]
    sweep2 = runs[runs["part"] == "t_sweep2"]
    if not sweep2.empty:
        lines += [f"The round-two temporal recipe at each T (started {recorded_dates(sweep2)}):",
                  "", to_markdown(t_table(sweep2)).rstrip(), ""]  # fmt: skip
    if (runs["part"] == "precision2_temporal").any():
        lines += [PRECISION_LINE, "", to_markdown(precision_table(runs)).rstrip(), ""]
    conv_runs = col.completed.assign(part=col.completed["tag"].fillna("untagged"))
    if conv_runs["part"].isin(conv_tags()).any():
        lines += [
            "Convolutional models (round two; defaults: the conv SNN under direct coding at "
            "T=5; tuned: the best of each 10-epoch search, retrained; MNIST unless said):",
            "",
            to_markdown(conv_table(conv_runs)).rstrip(),
            "",
        ]
    return "\n".join(lines).rstrip()


def replace_block(text: str, block: str, where: str = "README") -> str:
    """``text`` with what lies between :data:`BLOCK_START` and :data:`BLOCK_END` replaced by
    ``block`` (ValueError naming ``where`` when the markers are missing)."""
    start, end = text.find(BLOCK_START), text.find(BLOCK_END)
    if start < 0 or end < start:
        raise ValueError(f"{where} has no '{BLOCK_START}' ... '{BLOCK_END}' block")
    return text[: start + len(BLOCK_START)] + "\n" + block + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__)
    p.add_argument("root", nargs="?", default="docs/results", type=Path)
    p.add_argument("--out", type=Path, default=None, help="where to write (default: ROOT)")
    p.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also rewrite the Results block of this README (between its markers)",
    )
    args = p.parse_args(argv)
    try:
        path = write_study_report(args.root, args.out)
        if args.readme is not None:
            text = args.readme.read_text(encoding="utf-8")
            block = results_block(collect([args.root]))
            args.readme.write_text(replace_block(text, block, str(args.readme)), "utf-8")
            print(f"rewrote the Results block of {args.readme}")
    except (NoRunsError, ValueError, OSError) as exc:
        print(f"analysis.study: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
