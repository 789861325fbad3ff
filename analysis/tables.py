"""Comparison tables from collected runs: numbers (DataFrame/CSV) and text (Markdown, LaTeX).

:func:`compare` groups completed runs by config keys and gives mean and sample standard
deviation (ddof=1) of a metric over the runs in each group (usually seeds), the run count,
epochs, training time per epoch and, when runs recorded spiking metrics, synaptic
operations and estimated energy per inference. :func:`study_table` gives the study's
layout (Model, Timesteps, Epochs, Test Accuracy, Model Type).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from analysis.collect import METRICS, RUNTIME_KEYS

DEFAULT_BY = ("model", "encoding", "neuron")

MODEL_NAMES = {
    "ann": "ANN",
    "single_step": "Single-step SNN",
    "temporal": "Temporal SNN",
    "conv_ann": "Conv ANN",
    "conv_snn": "Conv SNN",
}

METRIC_TITLES = {
    "test_acc": "Test Accuracy",
    "best_val_acc": "Best Validation Accuracy",
    "final_test_acc": "Final-epoch Test Accuracy",
}

#: Spiking metrics shown in the comparison table when any run has them.
SPIKING_COLUMNS = {
    "synops_per_sample": "SynOps / sample",
    "energy_per_inference_uj": "Energy / inference (µJ)",
}


def check_metric(metric: str) -> None:
    """Raise ValueError (one line) unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not known; allowed: {', '.join(METRICS)}")


def check_keys(runs: pd.DataFrame, by: Sequence[str]) -> None:
    """Raise ValueError (one line) naming a grouping key that is not a column of ``runs``."""
    allowed = [c for c in runs.columns if c not in ("latency_curve",)]
    for key in by:
        if key not in runs.columns:
            short = [c for c in allowed if not c.startswith("config.")]
            raise ValueError(
                f"grouping key {key!r} is not known; use a run column ({', '.join(short[:14])}, "
                "…) or a config key as config.<group>.<key> (e.g. config.neuron.reset)"
            )


def _epochs(s: pd.Series) -> object:
    vals = sorted({int(v) for v in s.dropna()})
    if not vals:
        return pd.NA
    return vals[0] if len(vals) == 1 else f"{vals[0]}-{vals[-1]}"


def _seeds(s: pd.Series) -> str:
    return ",".join(str(int(v)) for v in sorted(set(s.dropna())))


def compare(
    runs: pd.DataFrame, by: Sequence[str] = DEFAULT_BY, metric: str = "test_acc"
) -> pd.DataFrame:
    """Group ``runs`` (use :attr:`Collection.completed`) by ``by``; one row per group.

    Columns: the keys; ``n_runs``; ``seeds``; ``<metric>_mean`` and ``<metric>_std``
    (fractions in [0, 1]; std is the sample std, NaN for a single run); ``epochs``
    (completed epochs, "a-b" if they differ); ``time_per_epoch_s`` (mean training time
    per epoch, s); and, if any run has them, ``synops_per_sample`` and
    ``energy_per_inference_uj`` (means over the group).
    """
    check_metric(metric)
    check_keys(runs, by)
    by = list(by)
    if runs.empty:
        return pd.DataFrame(columns=[*by, "n_runs", f"{metric}_mean", f"{metric}_std"])
    df = runs.copy()
    df[metric] = pd.to_numeric(df[metric], errors="coerce")
    grouped = df.groupby(by, dropna=False, sort=True)
    out = grouped.agg(
        n_runs=(metric, "size"),
        seeds=("seed", _seeds),
        **{f"{metric}_mean": (metric, "mean"), f"{metric}_std": (metric, "std")},
        epochs=("epochs_completed", _epochs),
        time_per_epoch_s=("time_per_epoch_s", "mean"),
    )
    for col in SPIKING_COLUMNS:
        if col in df and df[col].notna().any():
            out[col] = grouped[col].mean()
    return out.reset_index()


def mixed_groups(runs: pd.DataFrame, by: Sequence[str] = DEFAULT_BY) -> list[tuple[str, list[str]]]:
    """Groups whose runs differ in config keys other than the seed (and how runs were
    executed): [(group as "a / b / c", [differing keys]), ...]. Their mean ± std mixes
    configurations; adding the keys to ``by`` separates them."""
    if runs.empty:
        return []
    cols = [
        c
        for c in runs.columns
        if c.startswith("config.") and c.removeprefix("config.") not in RUNTIME_KEYS
    ]
    out = []
    for key, g in runs.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        diff = [c.removeprefix("config.") for c in cols if len({repr(v) for v in g[c]}) > 1]
        if diff:
            out.append((" / ".join(_cell(k) for k in key), diff))
    return out


def _cell(v: object) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _si(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _pct(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def format_compare(table: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """:func:`compare`'s numbers as display strings (accuracy in %, mean ± std)."""
    keys = [
        c
        for c in table.columns
        if c
        not in (
            "n_runs",
            "seeds",
            f"{metric}_mean",
            f"{metric}_std",
            "epochs",
            "time_per_epoch_s",
            *SPIKING_COLUMNS,
        )
    ]
    out = pd.DataFrame({k: [_cell(v) for v in table[k]] for k in keys})
    if "model" in out:
        out["model"] = [MODEL_NAMES.get(m, m) for m in out["model"]]
    title = METRIC_TITLES[metric]
    out[f"{title} (%)"] = [
        _pct(m, s) for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"])
    ]
    out["n runs"] = [str(n) for n in table["n_runs"]]
    out["seeds"] = list(table["seeds"])
    out["epochs"] = [_cell(e) for e in table["epochs"]]
    out["train time / epoch (s)"] = [
        "–" if math.isnan(t) else f"{t:.1f}" for t in table["time_per_epoch_s"].astype(float)
    ]
    if "synops_per_sample" in table:
        out[SPIKING_COLUMNS["synops_per_sample"]] = [_si(x) for x in table["synops_per_sample"]]
    if "energy_per_inference_uj" in table:
        out[SPIKING_COLUMNS["energy_per_inference_uj"]] = [
            "–" if math.isnan(x) else f"{x:.3g}" for x in table["energy_per_inference_uj"]
        ]
    return out


def study_table(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """The study's layout, one row per (model, encoding, neuron, T, epochs), as strings.

    Columns: Model, Timesteps ("–" for the ANN), Epochs, <metric title> (mean ± std in %,
    with the number of runs), Model Type (spiking or not). The encoding and neuron are
    added to the model name only when a model ran with more than one of them.
    """
    check_metric(metric)
    cols = ["Model", "Timesteps", "Epochs", METRIC_TITLES[metric], "Model Type"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    df = runs.copy()
    df[metric] = pd.to_numeric(df[metric], errors="coerce")
    keys = ["model", "encoding", "neuron", "T", "epochs_completed"]
    g = df.groupby(keys, dropna=False, sort=True)[metric].agg(["mean", "std", "size"])
    g = g.reset_index()
    variants = g.groupby("model")[["encoding", "neuron"]].apply(lambda x: len(x.drop_duplicates()))
    rows = []
    for _, r in g.iterrows():
        name = MODEL_NAMES.get(r["model"], r["model"])
        if variants[r["model"]] > 1 and r["model"] != "ann":
            name += f" ({_cell(r['encoding'])}, {_cell(r['neuron'])})"
        acc = _pct(r["mean"], r["std"]) + f" % (n={int(r['size'])})"
        spiking = r["model"] != "ann" and not pd.isna(r["T"])  # no time axis: non-spiking
        rows.append(
            [
                name,
                _cell(r["T"]),
                _cell(r["epochs_completed"]),
                acc,
                "SNN (spiking)" if spiking else "ANN (non-spiking)",
            ]
        )
    return pd.DataFrame(rows, columns=cols)


def to_markdown(table: pd.DataFrame) -> str:
    """A DataFrame of strings as a GitHub Markdown table."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "µ": r"$\mu$",
    "–": "--",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A DataFrame of strings as a booktabs ``tabular`` (in a ``table`` if captioned)."""
    cols = [_latex_escape(str(c)) for c in table.columns]
    body = [
        r"\begin{tabular}{" + "l" * len(cols) + "}",
        r"\toprule",
        " & ".join(cols) + r" \\",
        r"\midrule",
    ]
    for row in table.itertuples(index=False):
        body.append(" & ".join(_latex_escape(_cell(v)) for v in row) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        body = [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + _latex_escape(caption) + "}",
            *body,
            r"\end{table}",
        ]
    return "\n".join(body) + "\n"
