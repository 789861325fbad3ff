"""Figures (PNG) from collected runs: each function draws one figure, saves it, returns its path.

Figures are built on :class:`matplotlib.figure.Figure` objects rendered by Agg, so
nothing opens a window and the global pyplot state is untouched (a notebook shows the
saved PNGs). Functions that need data a collection may lack (spiking metrics, a temporal
run, swept parameters) return None when there is nothing to draw.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import textwrap
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg", force=False)  # a no-op when pyplot already chose a backend
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.collect import METRICS_FILE, RUNTIME_KEYS  # noqa: E402
from analysis.tables import DEFAULT_BY, METRIC_TITLES, MODEL_NAMES, check_metric  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")

BEST_MODEL_FILE = "best_model.pt"
DPI = 120


def _styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Draw inside seaborn's whitegrid style without changing the caller's global style."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
            return fn(*args, **kwargs)

    return wrapper


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _log_x(ax) -> None:
    """Log x axis labelled with plain numbers at major ticks only (no overlapping labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


#: Keys whose values read best in scientific notation (learning rates, decays).
SCIENTIFIC_KEYS = ("lr", "weight_decay", "min_lr")
#: Characters per line of a wrapped tick label or legend entry.
LABEL_WIDTH = 22


def _fmt(v: Any, key: str = "") -> str | None:
    """A value as a label shows it: 3 significant digits, ``lr``-like keys as ``7.51e-04``."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if key.split(".")[-1] in SCIENTIFIC_KEYS:
            return f"{float(v):.2e}"
        return str(int(v)) if float(v).is_integer() else f"{float(v):.3g}"
    return str(v)


def _wrap(label: str, width: int = LABEL_WIDTH) -> str:
    """Break a long label into lines at commas and spaces."""
    return textwrap.fill(label, width=width, break_long_words=False) if label else label


def _legend_outside(ax, title: str = "") -> None:
    """The legend to the right of the axes, so it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    ax.legend(
        handles,
        [_wrap(lab, 30) for lab in labels],
        title=title,
        fontsize=8,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )


def _accuracy_limits(values: pd.Series, spread: pd.Series | None = None) -> tuple[float, float]:
    """y limits (%) that show the differences between groups: from a little below the
    lowest value (minus its s.d.) to a little above the highest, clipped to [0, 100]."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return 0.0, 100.0
    sd = 0.0 if spread is None else float(pd.to_numeric(spread, errors="coerce").fillna(0).max())
    lo, hi = float(v.min()) - sd, float(v.max()) + sd
    margin = max(0.5, 0.15 * (hi - lo))
    return max(0.0, math.floor(2 * (lo - margin)) / 2), min(
        100.0, math.ceil(2 * (hi + 2 * margin)) / 2
    )


def group_label(row: pd.Series | dict, by: Sequence[str] = DEFAULT_BY) -> str:
    """A readable name for a group: ``Temporal SNN (rate, leaky, T=10)``.

    The model key is shown by its study name; string values as they are, numbers as
    ``key=value``; empty values (the ANN's encoding/neuron) are left out.
    """
    head, parts = "", []
    for key in by:
        text = _fmt(row[key], key)
        if text is None:
            continue
        if key == "model":
            head = MODEL_NAMES.get(text, text)
        elif isinstance(row[key], str):
            parts.append(text)
        else:
            parts.append(f"{key.removeprefix('config.')}={text}")
    if not head:
        return ", ".join(parts) or "all runs"
    return f"{head} ({', '.join(parts)})" if parts else head


def with_labels(df: pd.DataFrame, by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """``df`` plus a ``label`` column (:func:`group_label`), sorted by the keys."""
    df = df.copy()
    df["label"] = [group_label(r, by) for _, r in df[list(by)].iterrows()] if len(df) else []
    return df.sort_values(list(by), na_position="first", kind="stable")


def _ylabel(metric: str) -> str:
    return f"{METRIC_TITLES[metric].capitalize()} (%)"


@_styled
def accuracy_bars(
    runs: pd.DataFrame,
    path: str | Path,
    by: Sequence[str] = DEFAULT_BY,
    metric: str = "test_acc",
) -> Path | None:
    """Bar per group: mean ``metric`` (in %) over its runs, whiskers ±1 sample s.d., a dot
    per run. ``runs``: completed runs (:attr:`Collection.completed`)."""
    check_metric(metric)
    if runs.empty:
        return None
    df = with_labels(runs, by)
    df["value"] = pd.to_numeric(df[metric], errors="coerce") * 100
    order = list(dict.fromkeys(df["label"]))
    fig = Figure(figsize=(max(5.0, 1.6 * len(order) + 2), 4.5))
    ax = fig.subplots()
    sns.barplot(
        data=df,
        x="label",
        y="value",
        order=order,
        errorbar="sd",
        capsize=0.15,
        hue="label",
        hue_order=order,
        palette="deep",
        legend=False,
        ax=ax,
    )
    sns.stripplot(data=df, x="label", y="value", order=order, color="black", size=4, ax=ax)
    stats = df.groupby("label", sort=False)["value"].agg(["mean", "std", "max", "size"])
    for i, label in enumerate(order):
        m, sd, top, n = stats.loc[label, ["mean", "std", "max", "size"]]
        top = max(top, m + (0 if math.isnan(sd) else sd))
        ax.annotate(
            f"{m:.2f}% (n={int(n)})",
            (i, top),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xlabel("")
    rotate = len(order) > 6
    ax.set_xticks(
        range(len(order)),
        [_wrap(lab) for lab in order],
        rotation=30 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize=9,
    )
    lo, hi = _accuracy_limits(df["value"], stats["std"])
    ax.set_ylim(lo, hi)
    cut = f" — axis starts at {lo:.1f} %" if lo > 0 else ""
    ax.set_ylabel(_ylabel(metric) + cut)
    ax.set_title(
        f"{METRIC_TITLES[metric]} per {'model' if list(by) == list(DEFAULT_BY) else 'group'}\n"
        "bar: mean over runs (seeds) · whisker: ±1 s.d. · dot: one run",
        fontsize=11,
    )
    return _save(fig, path)


@_styled
def loss_curves(
    history: pd.DataFrame, path: str | Path, by: Sequence[str] = DEFAULT_BY
) -> Path | None:
    """Training loss and validation accuracy per epoch, one line per group: mean over its
    runs, band ±1 s.d. ``history``: :attr:`Collection.completed_history`."""
    if history.empty:
        return None
    df = with_labels(history, [k for k in by if k in history.columns])
    df["val_pct"] = pd.to_numeric(df["val_acc"], errors="coerce") * 100
    fig = Figure(figsize=(11, 4.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    kw = dict(x="epoch", hue="label", errorbar="sd", marker="o", palette="deep")
    sns.lineplot(data=df, y="train_loss", ax=ax_loss, legend=False, **kw)
    sns.lineplot(data=df, y="val_pct", ax=ax_acc, **kw)
    ax_loss.set_ylabel("Training loss (cross-entropy, mean over epoch)")
    ax_loss.set_title("Training loss per epoch", fontsize=11)
    ax_acc.set_ylabel("Validation accuracy (%)")
    ax_acc.set_title("Validation accuracy per epoch", fontsize=11)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _legend_outside(ax_acc)
    fig.suptitle("Line: mean over runs (seeds) · band: ±1 s.d.", fontsize=10, y=1.0)
    return _save(fig, path)


def choose_raster_run(runs: pd.DataFrame, metric: str = "best_val_acc") -> str | None:
    """The completed temporal (else single-step) SNN run with a saved ``best_model.pt``
    and the highest ``metric`` (validation accuracy: runs are chosen on validation, never on
    test); None if there is none."""
    if runs.empty:
        return None
    for model in ("temporal", "single_step"):
        cand = runs[(runs["model"] == model) & runs["usable"]]
        cand = cand[[(Path(d) / BEST_MODEL_FILE).is_file() for d in cand["run_dir"]]]
        if not cand.empty:
            best = cand.sort_values(metric, ascending=False, kind="stable").iloc[0]
            return str(best["run_dir"])
    return None


def output_spikes(run_dir: str | Path, n_digits: int = 4) -> dict[str, Any]:
    """Rebuild a run's model from its metrics.json config and ``best_model.pt``, feed it the
    first ``n_digits`` test images, encoded exactly as in the run's test evaluation (its first
    evaluation batch, same seed, the run's ``trainer.precision``), so the spikes are those
    behind ``test_acc``.

    Returns ``spikes`` (uint8 ``[T, B, C]``, output layer), ``images`` (``[B, 28, 28]``),
    ``labels`` and ``preds`` (``[B]``), ``config`` (the run's config dict).
    """
    import torch
    from omegaconf import OmegaConf

    from snnbench.config import is_spiking
    from snnbench.dataio.datasets import load_dataset
    from snnbench.dataio.inputs import Batcher
    from snnbench.maths.engine import autocast
    from snnbench.measure.evaluation import EVAL_SEED_OFFSET
    from snnbench.networks.contract import build_model

    run_dir = Path(run_dir)
    record = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    cfg = OmegaConf.create(record["config"])
    if not is_spiking(cfg):  # the ANN, or any non-spiking model
        raise ValueError(f"{run_dir}: a non-spiking run ({cfg.model.name}) has no spikes")
    model = build_model(cfg)
    state = torch.load(run_dir / BEST_MODEL_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    splits = load_dataset(cfg.dataset, download=False)
    first = splits.test.images[: int(cfg.trainer.eval_batch_size)]  # evaluate()'s first batch
    images = first[:n_digits]
    labels = splits.test.labels[:n_digits]
    gen = torch.Generator().manual_seed(int(cfg.trainer.seed) + EVAL_SEED_OFFSET)
    x = Batcher(cfg)(first, gen)
    precision = str(cfg.trainer.get("precision", "32"))  # the run's own forward pass
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        out = model(x[:, :n_digits] if x.dim() == 3 else x[:n_digits])
    return {
        "spikes": out.spikes[-1].to(torch.uint8).numpy(),
        "images": images.numpy(),
        "labels": labels.numpy(),
        "preds": out.logits.argmax(1).numpy(),
        "config": record["config"],
    }


@_styled
def spike_raster(run_dir: str | Path, path: str | Path, n_digits: int = 4) -> Path:
    """Output-layer spike raster of an SNN run on the first ``n_digits`` test digits: for
    each digit its image above a raster (x: time step, y: output neuron = class)."""
    res = output_spikes(run_dir, n_digits)
    spikes, cfg = res["spikes"], res["config"]
    T, B, C = spikes.shape
    fig = Figure(figsize=(3.1 * B, 5.2))
    axes = fig.subplots(2, B, height_ratios=[1, 1.6], squeeze=False)
    for b in range(B):
        ax_img, ax = axes[0, b], axes[1, b]
        ax_img.imshow(res["images"][b], cmap="gray_r")
        ax_img.set_axis_off()
        ok = "correct" if res["labels"][b] == res["preds"][b] else "wrong"
        ax_img.set_title(
            f"label {res['labels'][b]} → predicted {res['preds'][b]} ({ok})", fontsize=10
        )
        ax.axhspan(res["labels"][b] - 0.45, res["labels"][b] + 0.45, color="tab:green", alpha=0.2)
        t, n = np.nonzero(spikes[:, b, :])
        ax.scatter(t + 1, n, marker="|", s=120 if T <= 30 else 40, color="black", linewidths=1.5)
        counts = spikes[:, b, :].sum(0)
        for c in range(C):
            ax.text(T + 0.5 + 0.02 * T, c, str(int(counts[c])), va="center", fontsize=7)
        ax.text(T + 0.5 + 0.02 * T, C - 0.3, "count", fontsize=7, va="bottom")
        ax.set_xlim(0.5, T + 0.5)
        ax.set_ylim(-0.6, C - 0.4)
        ax.set_yticks(range(C), [str(c) for c in range(C)] if b == 0 else [])
        if T <= 10:
            ax.set_xticks(range(1, T + 1))
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, integer=True))
        ax.set_xlabel("Time step t")
        ax.grid(False)
        if b == 0:
            ax.set_ylabel("Output neuron (class)")
    model = cfg["model"]
    silent = " · no output spike at all in these digits" if spikes.sum() == 0 else ""
    fig.suptitle(
        f"Output-layer spikes of the {MODEL_NAMES.get(model['name'], model['name'])} "
        f"(T={model['num_steps']}, {cfg['encoding']['name']} encoding, "
        f"{cfg['neuron']['name']} neurons, seed {cfg['trainer']['seed']}) on test digits\n"
        f"| = spike · green row = true class · numbers at right = spike count per class{silent}",
        fontsize=10,
        y=1.03,
    )
    return _save(fig, path)


def swept_params(runs: pd.DataFrame) -> list[str]:
    """Config columns (``config.<key>``) that vary across ``runs``, seeds excluded.

    Keys come from the runs' command-line overrides when they have any (``model=ann``
    means ``config.model.name``), else from every config key that varies, keeping one of
    several keys that split the runs the same way (e.g. model.name and model.lr).
    """
    if runs.empty:
        return []
    cols: list[str] = []
    for ov in runs["overrides"]:
        for item in json.loads(ov):
            if "=" not in item:
                continue
            key = item.split("=", 1)[0].lstrip("+~")
            if key in RUNTIME_KEYS or key.startswith("hydra."):
                continue
            col = f"config.{key}"
            if col not in runs.columns and f"{col}.name" in runs.columns:
                col = f"{col}.name"
            if col in runs.columns and col not in cols:
                cols.append(col)
    if not cols:
        cols = [
            c
            for c in runs.columns
            if c.startswith("config.") and c.removeprefix("config.") not in RUNTIME_KEYS
        ]
    return [group[0] for group in _swept_groups(runs, cols)]


def _swept_groups(runs: pd.DataFrame, cols: list[str]) -> list[list[str]]:
    """``cols`` that vary across ``runs``, grouped when they split the runs identically
    into fewer groups than runs (keys drawn at random per run, as in an Optuna search,
    are distinct in every run and stay separate)."""
    groups: dict[tuple[int, ...] | str, list[str]] = {}
    for c in cols:
        values = [repr(v) for v in runs[c]]
        n = len(set(values))
        if n > 1:
            key = tuple(pd.factorize(pd.Series(values))[0]) if n < len(values) else c
            groups.setdefault(key, []).append(c)
    return list(groups.values())


def confounded_with(runs: pd.DataFrame, col: str) -> list[str]:
    """Other config columns that take one value per value of ``col`` across ``runs`` and
    vary with it (e.g. model.num_steps with model.name): their effects cannot be told apart."""
    others = [c for c in runs.columns if c.startswith("config.") and c != col]
    others = [c for c in others if c.removeprefix("config.") not in RUNTIME_KEYS]
    for group in _swept_groups(runs, [col, *others]):
        if group[0] == col:
            return group[1:]
    return []


def _is_numeric(s: pd.Series) -> bool:
    vals = pd.to_numeric(s, errors="coerce")
    return bool(vals.notna().all()) and not s.map(lambda v: isinstance(v, bool)).any()


@_styled
def sweep_plot(
    runs: pd.DataFrame, path: str | Path, metric: str = "best_val_acc", max_params: int = 9
) -> Path | None:
    """``metric`` (%) against each swept parameter (:func:`swept_params`), one panel each:
    the mean per value, one line per combination of the other swept parameters (if at
    most 8; else one line over all runs). None when nothing varies."""
    check_metric(metric)
    params = swept_params(runs)[:max_params]
    if not params:
        return None
    ncol = min(3, len(params))
    nrow = math.ceil(len(params) / ncol)
    fig = Figure(figsize=(4.6 * ncol, 3.8 * nrow))
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    y = pd.to_numeric(runs[metric], errors="coerce") * 100
    for ax, col in zip(axes, params):
        others = [p for p in params if p != col]
        df = pd.DataFrame({"y": y.to_numpy(), "x": runs[col].to_numpy()})
        df["other"] = (
            [
                ", ".join(
                    f"{p.removeprefix('config.').split('.')[-1]}={_fmt(v, p)}"
                    for p, v in zip(others, vals)
                )
                for vals in zip(*(runs[p] for p in others))
            ]
            if others
            else "all"
        )
        n_other = df["other"].nunique()
        hue = "other" if 1 < n_other <= 8 and n_other <= len(df) / 2 else None
        scientific = col.split(".")[-1] in SCIENTIFIC_KEYS
        if _is_numeric(df["x"]) and df["x"].nunique() > len(df) / 2 and len(df) >= 3:
            df["x"] = pd.to_numeric(df["x"])  # (nearly) every run its own value: a search
            sns.scatterplot(data=df, x="x", y="y", ax=ax, color="tab:blue", s=40)
            if (df["x"] > 0).all() and (scientific or df["x"].max() / df["x"].min() >= 20):
                _log_x(ax)
        elif _is_numeric(df["x"]) and df["x"].nunique() >= 3:
            df["x"] = pd.to_numeric(df["x"])
            sns.lineplot(
                data=df,
                x="x",
                y="y",
                hue=hue,
                marker="o",
                errorbar=None,
                ax=ax,
                palette="deep" if hue else None,
                color=None if hue else "tab:red",
                legend=hue is not None,
            )
            if (df["x"] > 0).all() and df["x"].max() / df["x"].min() >= 100:
                _log_x(ax)
        else:
            df["x"] = df["x"].map(lambda v, c=col: _fmt(v, c) or "none")
            order = sorted(df["x"].unique(), key=_sort_key)
            if hue is None:  # the runs behind each mean
                sns.stripplot(
                    data=df, x="x", y="y", order=order, color="0.6", size=4, jitter=0.15, ax=ax
                )
            sns.pointplot(
                data=df,
                x="x",
                y="y",
                order=order,
                hue=hue,
                ax=ax,
                errorbar=None,
                palette="deep" if hue else None,
                color=None if hue else "tab:red",
                dodge=0.2 if hue else False,
                linestyle="none",  # categories: no line implying an order between them
                legend=hue is not None,
            )
        if hue:
            _legend_outside(ax, "other parameters")
        same = [c.removeprefix("config.") for c in confounded_with(runs, col)]
        xlabel = col.removeprefix("config.")
        if same:
            shown = ", ".join(same[:3]) + (", …" if len(same) > 3 else "")
            xlabel += f"\n(varies together with {shown})"
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_ylabel(metric))
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{METRIC_TITLES[metric]} vs each swept parameter\n"
        "blue dot: one run (a search: each run its own value) · red: mean per value, grey "
        "dots: its runs · coloured lines: one per combination of the other parameters",
        fontsize=11,
    )
    fig.tight_layout()
    return _save(fig, path)


def _sort_key(v: str) -> tuple[int, float | str]:
    try:
        return (0, float(v))
    except ValueError:
        return (1, v)


def optuna_study_names(db: str | Path) -> list[str]:
    """Names of the studies in an Optuna SQLite storage."""
    import optuna

    return optuna.study.get_all_study_names(storage=f"sqlite:///{Path(db).resolve()}")


@_styled
def optuna_plots(
    db: str | Path,
    out_dir: str | Path,
    study_name: str | None = None,
    objective: str = "objective value",
) -> tuple[list[Path], list[str]]:
    """Optimisation history and parameter importance of a study in an Optuna SQLite file.

    ``study_name``: None picks ``snnbench`` if present, else the only study; ``objective``
    names the optimised value on the axis. Returns
    (PNG paths written, notes on what could not be drawn and why).
    """
    import optuna
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    db = Path(db)
    names = optuna_study_names(db)
    if study_name is None:
        study_name = "snnbench" if "snnbench" in names or len(names) != 1 else names[0]
    if study_name not in names:
        return [], [f"{db}: no study named {study_name!r} (found: {', '.join(names) or 'none'})"]
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db.resolve()}")
    out_dir = Path(out_dir)
    stem = db.parent.name or "optuna"
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    paths: list[Path] = []
    notes: list[str] = []
    if not done:
        return [], [f"{db}: study {study_name!r} has no completed trial"]
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = ovm.plot_optimization_history(study)
        ax.set_title(
            f"Optuna optimisation history: study '{study_name}'\n"
            f"{study.direction.name.lower()}; {len(done)} completed of {len(study.trials)} "
            "trials (pruned and failed ones have no value)",
            fontsize=10,
        )
        ax.set_ylabel(objective)
        fig = ax.figure
        fig.set_size_inches(7, 4.2)
        paths.append(_save(fig, out_dir / f"optuna_history_{stem}.png"))
        plt.close(fig)
        if len(done) < 2 or not study.best_trial.params:
            notes.append(f"{db}: parameter importance needs 2+ completed trials with parameters")
        else:
            try:
                ax = ovm.plot_param_importances(study)
                ax.set_title("", loc="left")
                ax.set_title(
                    f"Optuna hyperparameter importance (fANOVA): study '{study_name}'",
                    fontsize=10,
                )
                ax.set_xlabel("Importance (share of objective variance explained)")
                fig = ax.figure
                fig.set_size_inches(7, max(2.5, 0.6 * len(study.best_trial.params) + 1.5))
                paths.append(_save(fig, out_dir / f"optuna_importance_{stem}.png"))
                plt.close(fig)
            except (ValueError, RuntimeError) as exc:
                notes.append(f"{db}: parameter importance not computed ({exc})")
    return paths, notes


@_styled
def energy_accuracy(
    runs: pd.DataFrame,
    path: str | Path,
    by: Sequence[str] = DEFAULT_BY,
    metric: str = "test_acc",
) -> Path | None:
    """``metric`` (%) against estimated energy per inference (µJ, from the runs' spiking
    metrics), one dot per run, coloured by group. None when no run has the energy."""
    check_metric(metric)
    if runs.empty or "energy_per_inference_uj" not in runs:
        return None
    df = runs[runs["energy_per_inference_uj"].notna()]
    if df.empty:
        return None
    df = with_labels(df, by)
    df["value"] = pd.to_numeric(df[metric], errors="coerce") * 100
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    sns.scatterplot(
        data=df,
        x="energy_per_inference_uj",
        y="value",
        hue="label",
        style="label",
        s=80,
        palette="deep",
        ax=ax,
    )
    e = df["energy_per_inference_uj"]
    if (e > 0).all() and e.max() / e.min() >= 10:
        _log_x(ax)
    costs = df["energy_model"].dropna().unique() if "energy_model" in df else []
    cost_note = f"; {costs[0]}" if len(costs) == 1 else ""
    ax.set_xlabel(f"Estimated energy per inference (µJ{cost_note})")
    ax.set_ylabel(_ylabel(metric))
    ax.set_title(
        f"{METRIC_TITLES[metric]} vs estimated energy (one dot per run; up and left is better)",
        fontsize=11,
    )
    _legend_outside(ax)
    return _save(fig, path)


@_styled
def latency_curves(
    runs: pd.DataFrame, path: str | Path, by: Sequence[str] = DEFAULT_BY
) -> Path | None:
    """Test accuracy (%) when the readout is cut at step t = 1..T (the runs' spiking
    ``latency_curve``) for runs with T > 1; one line per group, mean over runs, band ±1 s.d.
    None without data."""
    if runs.empty or "latency_curve" not in runs:
        return None
    df = runs[runs["latency_curve"].map(lambda c: isinstance(c, list) and len(c) > 1)]
    if df.empty:
        return None
    df = with_labels(df, by)
    long = pd.DataFrame(
        [
            {"label": lab, "run": run, "t": t + 1, "acc": 100 * a}
            for lab, run, curve in zip(df["label"], df["run_dir"], df["latency_curve"])
            for t, a in enumerate(curve)
        ]
    )
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    sns.lineplot(
        data=long,
        x="t",
        y="acc",
        hue="label",
        errorbar="sd",
        marker="o" if long["t"].max() <= 30 else None,
        palette="deep",
        ax=ax,
    )
    ax.set_xlabel("Time steps before the readout (t)")
    ax.set_ylabel("Test accuracy (%)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(
        "Accuracy–latency: test accuracy with the output read at step t\n"
        "line: mean over runs (seeds) · band: ±1 s.d.",
        fontsize=11,
    )
    _legend_outside(ax)
    return _save(fig, path)
