"""The report's reading of how tuned runs fit: overfitting, still improving, or neither, and
what a T sweep gains."""

from __future__ import annotations

import pandas as pd

from analysis.study import fit_reading, fit_rows, fit_table, t_gain


def _runs_and_history(model: str, part: str, curves: list[list[tuple[float, float]]]):
    """One run per curve; each curve is (train_acc, val_acc) per epoch, best epoch by val."""
    runs, hist = [], []
    for i, curve in enumerate(curves):
        d = f"{part}/seed{i}"
        best = max(range(len(curve)), key=lambda e: (curve[e][1], -e)) + 1
        runs.append({"part": part, "model": model, "run_dir": d, "best_epoch": best,
                     "epochs": len(curve)})  # fmt: skip
        for e, (tr, va) in enumerate(curve, 1):
            hist.append({"run_dir": d, "epoch": e, "train_acc": tr, "val_acc": va})
    return pd.DataFrame(runs), pd.DataFrame(hist)


def test_an_overfitting_recipe_reads_as_such():
    runs, hist = _runs_and_history(
        "temporal", "tuned2_temporal",
        [[(0.97, 0.975), (0.995, 0.983), (0.996, 0.982)],
         [(0.97, 0.974), (0.993, 0.981), (0.994, 0.980)]],
    )  # fmt: skip
    rows = fit_rows(runs, hist, {"temporal": "tuned2_temporal", "ann": "tuned2_ann"})
    assert list(rows["model"]) == ["temporal"]  # no ANN runs: no row
    (row,) = rows.itertuples()
    assert round(row.train, 2) == 99.5 and round(row.val, 2) == 98.1 and row.best_epochs == [2, 2]
    assert fit_table(rows).iloc[0].tolist() == ["Temporal SNN", "99.50", "98.10", "1.40",
                                                "2, 2 of 3"]  # fmt: skip
    assert fit_reading(row).startswith("it fits its training batches 1.40 points better")
    assert "overfits" in fit_reading(row)


def test_a_recipe_still_improving_at_its_last_epoch_is_budget_bound():
    runs, hist = _runs_and_history(
        "single_step", "tuned2_single_step", [[(0.95, 0.96), (0.982, 0.981)]] * 3
    )
    (row,) = fit_rows(runs, hist, {"single_step": "tuned2_single_step"}).itertuples()
    text = fit_reading(row)
    assert "does not overfit (train − val 0.10 points)" in text
    assert "still improving at its last epoch (2)" in text and "overfits" not in text


def test_a_recipe_that_neither_overfits_nor_improves():
    runs, hist = _runs_and_history("ann", "p", [[(0.95, 0.981), (0.982, 0.980)]])
    (row,) = fit_rows(runs, hist, {"ann": "p"}).itertuples()
    assert fit_reading(row).startswith("it neither overfits")


def test_t_gain_compares_t5_with_the_largest_t_as_printed():
    sweep = pd.DataFrame({"T": [1, 5, 5, 25, 25], "test_acc": [0.97, 0.9842, 0.9844, 0.9853,
                                                                0.9853]})  # fmt: skip
    assert t_gain(sweep).endswith("from 98.43 % at T=5 to 98.53 % at T=25 (+0.10 points)")
    assert t_gain(sweep[sweep["T"] == 5]) is None
