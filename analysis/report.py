"""One call from run folders to a report: ``DIR/report.md`` with tables, figures and CSVs.

:func:`write_report` checks its inputs (paths, grouping keys, metric) before writing
anything, then writes the tables (Markdown in the report, CSV and LaTeX beside it), every
figure the runs allow, and the list of runs left out with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import figures, tables
from analysis.collect import Collection, collect
from analysis.tables import DEFAULT_BY, METRIC_TITLES

KIND_ORDER = ("failed", "running", "pruned", "partial", "corrupt", "empty")


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _counts_line(col: Collection) -> str:
    n_found = len(col.runs) + sum(1 for p in col.problems if p.kind in ("corrupt", "empty"))
    n_done = len(col.completed)
    counts = col.problem_counts()
    parts = [f"{counts[k]} {k}" for k in KIND_ORDER if counts.get(k)]
    left = f"; left out: {', '.join(parts)} (reasons below)" if parts else ""
    return f"**{n_found} run folders found, {n_done} completed runs used{left}.**"


def check_inputs(col: Collection, by: Sequence[str], metric: str) -> None:
    """Raise ValueError (one line) for an unknown metric or grouping key."""
    tables.check_metric(metric)
    if not col.runs.empty:
        tables.check_keys(col.runs, by)


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    by: Sequence[str] = DEFAULT_BY,
    metric: str = "test_acc",
    study_name: str | None = None,
    raster_run: str | Path | None = None,
    n_digits: int = 4,
) -> Path:
    """Collect the runs under ``paths`` and write ``out/report.md`` plus PNGs and CSVs.

    Raises NoRunsError / ValueError (one line) before writing anything if a path holds no
    run, a grouping key or the metric is unknown. Returns the report's path.
    """
    col = collect(list(paths))
    by = list(by)
    check_inputs(col, by, metric)
    if raster_run is not None and not (Path(raster_run) / "best_model.pt").is_file():
        raise ValueError(f"--raster-run {raster_run}: no best_model.pt there")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = METRIC_TITLES[metric]
    md: list[str] = [
        "# snnbench report",
        "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
        + ", ".join(f"`{p}`" for p in col.roots)
        + ".",
        "",
        _counts_line(col),
        "",
        f"Metric: **{title}** (`{metric}`). Accuracies are in %, as mean ± sample standard "
        "deviation (n−1) over the runs of a group, which differ only in `trainer.seed` "
        "unless a grouping key says otherwise; no ± when a group has one run. "
        "`test_acc` is the test accuracy of the epoch with the best validation accuracy "
        "(model selection never looks at the test set).",
        "",
    ]
    runs, hist = col.completed, col.completed_history
    _write_csv(col.runs, out / "runs.csv")
    _write_csv(col.history, out / "history.csv")
    if not runs.empty:
        cmp = tables.compare(runs, by, metric)
        cmp.to_csv(out / "comparison.csv", index=False)
        shown = tables.format_compare(cmp, metric)
        (out / "comparison.tex").write_text(
            tables.to_latex(shown, f"{title} by {', '.join(by)} (mean ± s.d. over runs)")
        )
        study = tables.study_table(runs, metric)
        study.to_csv(out / "study_table.csv", index=False)
        (out / "study_table.tex").write_text(tables.to_latex(study, f"{title} per model"))
        md += [
            "## Comparison",
            "",
            f"Completed runs grouped by {', '.join(f'`{k}`' for k in by)}. "
            "`–`: not applicable (the ANN has no encoding, neuron or time steps). "
            "`n runs`: runs averaged; `seeds`: their `trainer.seed`s; `epochs`: epochs "
            "trained; `train time / epoch`: mean wall time of one training epoch "
            "(evaluation excluded), which depends on the machine and its load."
            + (
                " `SynOps / sample`: synaptic operations per test image (nonzero input × "
                "nonzero weight, summed over time steps; ACs for spike inputs, MACs for "
                "analog ones); `Energy / inference`: the estimate from per-operation costs "
                "(see the README's Spiking metrics section)."
                if "synops_per_sample" in cmp or "energy_per_inference_uj" in cmp
                else ""
            ),
            "",
            tables.to_markdown(shown),
            *_mixed_note(runs, by),
            "The study's layout (Model Type: whether the network computes with spikes):",
            "",
            tables.to_markdown(study),
            "Also as CSV (`comparison.csv`, `study_table.csv`, all runs in `runs.csv`, "
            "per-epoch rows in `history.csv`) and LaTeX (`comparison.tex`, "
            "`study_table.tex`).",
            "",
        ]
    else:
        md += ["No completed run: no comparison table.", ""]

    md += ["## Figures", ""]
    fig_notes: list[str] = []

    def add(path: Path | None, heading: str, legend: str, missing: str) -> None:
        if path is None:
            fig_notes.append(f"- {heading}: {missing}")
            return
        md.extend([f"### {heading}", "", f"![{heading}]({_rel(path, out)})", "", legend, ""])

    add(
        figures.accuracy_bars(runs, out / "accuracy_bars.png", by, metric),
        "Accuracy per model",
        f"{title} per group: bar = mean over its runs, whisker = ±1 s.d., black dot = "
        "one run; the number above is the mean and the run count.",
        "no completed run",
    )
    add(
        figures.loss_curves(hist, out / "loss_curves.png", by),
        "Training curves",
        "Left: training loss (cross-entropy averaged over the epoch's batches) after each "
        "epoch; right: validation accuracy after each epoch. Line = mean over the runs "
        "of a group, band = ±1 s.d.",
        "no completed run with a history",
    )
    raster_dir = str(raster_run) if raster_run else figures.choose_raster_run(col.runs)
    if raster_dir is None:
        fig_notes.append("- Spike raster: no completed SNN run with a saved best_model.pt")
    else:
        try:
            path = figures.spike_raster(raster_dir, out / "spike_raster.png", n_digits)
        except Exception as exc:  # data missing, model changed since the run, ...
            fig_notes.append(
                f"- Spike raster of `{raster_dir}` not drawn: {type(exc).__name__}: {exc}"
            )
        else:
            add(
                path,
                "Output-layer spike raster",
                f"Run `{raster_dir}` (the best {title.lower()} among the temporal SNN runs), "
                f"its best-validation weights, on the first {n_digits} test digits, "
                "encoded as in evaluation. Each panel: the digit, then the output layer's "
                "spikes (x: time step, y: output neuron = class; | = a spike); the true "
                "class's row is green and the spike count per class is printed at the "
                "right. The prediction comes from the readout (membrane mean or spike "
                "count, per `model.readout`), so a silent output can still predict.",
                "",
            )
    swept = ", ".join(f"`{p.removeprefix('config.')}`" for p in figures.swept_params(runs))
    add(
        figures.sweep_plot(runs, out / "sweep.png", "best_val_acc"),
        "Validation accuracy vs swept parameters",
        "Best validation accuracy of each completed run against each parameter that "
        f"varies across runs ({swept}; "
        "seeds are not a parameter). A point is the mean over the runs with that value; "
        "when other parameters were swept too (up to 8 combinations), each combination "
        "of their values has its own colour, so a panel compares like with like. A note "
        "under an axis names config keys that changed together with that parameter "
        "(their effects cannot be told apart).",
        "no parameter varies across the completed runs",
    )
    add(
        figures.energy_accuracy(runs, out / "energy_accuracy.png", by, metric),
        "Accuracy vs estimated energy",
        f"{title} against the estimated energy of one inference (µJ), one dot per run. "
        "Energy = ACs × AC cost + MACs × MAC cost per image (45 nm CMOS costs; see the "
        "README's Spiking metrics section): an estimate from operation counts, not a "
        "measurement. Up and to the left is better.",
        "no run recorded spiking metrics (`spiking` in metrics.json)",
    )
    add(
        figures.latency_curves(runs, out / "latency_curves.png", by),
        "Accuracy–latency curve",
        "Test accuracy when the readout stops after t time steps (t = 1 … T), computed "
        "from one pass over the test set; shows how many steps a temporal SNN needs. "
        "Line = mean over runs, band = ±1 s.d.",
        "no run recorded a latency curve (temporal SNNs with spiking metrics)",
    )
    objective = "objective value"
    if "config.optimized_metric" in col.runs and col.runs["config.optimized_metric"].nunique() == 1:
        name = col.runs["config.optimized_metric"].iloc[0]
        objective = f"{METRIC_TITLES.get(name, name).capitalize()} (0-1)"
    for db in col.optuna_dbs:
        try:
            pngs, notes = figures.optuna_plots(db, out, study_name, objective)
        except Exception as exc:  # not an Optuna file, locked, newer schema, ...
            pngs, notes = [], [f"{db}: not read as an Optuna storage ({exc})"]
        fig_notes += [f"- Optuna: {n}" for n in notes]
        for png in pngs:
            kind = "history" if "history" in png.name else "importance"
            legend = (
                "Each completed trial's objective value (dots) in trial order and the "
                "best value so far (line)."
                if kind == "history"
                else "How much of the objective's variance each searched parameter "
                "explains (fANOVA over the completed trials; sums to 1)."
            )
            add(png, f"Optuna {kind} (`{db}`)", legend, "")
    if fig_notes:
        md += ["Figures not drawn:", "", *fig_notes, ""]

    md += ["## Runs left out", ""]
    if col.problems:
        md.append(
            "Runs not in the tables and figures above (the per-run CSV lists every "
            "readable run with its `status`):"
        )
        md.append("")
        left = pd.DataFrame(
            [(p.kind, p.run_dir, p.reason) for p in col.problems],
            columns=["kind", "run dir", "reason"],
        )
        left.to_csv(out / "left_out.csv", index=False)
        md.append(tables.to_markdown(left))
    else:
        md += ["None: every run found completed.", ""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report


def _mixed_note(runs: pd.DataFrame, by: list[str]) -> list[str]:
    """Markdown lines warning about groups that average different configurations."""
    mixed = tables.mixed_groups(runs, by)
    if not mixed:
        return []
    lines = [
        "**Caution:** these groups average runs whose configurations differ in more than "
        "the seed; add the keys to `--by` (as `config.<key>`) to separate them:",
        "",
    ]
    for label, keys in mixed:
        more = f", … ({len(keys)} keys)" if len(keys) > 6 else ""
        lines.append(f"- {label}: {', '.join(f'`{k}`' for k in keys[:6])}{more}")
    return [*lines, ""]


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df = df.copy()
    if "latency_curve" in df:
        df["latency_curve"] = [json.dumps(c) if c is not None else "" for c in df["latency_curve"]]
    df.to_csv(path, index=False)
