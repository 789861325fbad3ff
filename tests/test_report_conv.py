"""The study report's convolutional part, on record folders written by the test: the conv
table (defaults, tuned, Fashion-MNIST, energy, epoch time, the conv SNN's target met or
missed by how much), rows without records saying so, the report and README block rendering
with partial records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.collect import collect
from analysis.study import (
    NOT_RUN,
    conv_table,
    met_or_missed,
    precision_table,
    recorded_dates,
    results_block,
    write_study_report,
)

TARGETS = {
    "conv_snn": "snnbench.conv.ConvSNN",
    "conv_ann": "snnbench.conv.ConvANN",
    "ann": "snnbench.models.ann_mlp",
}


def _record(
    root: Path,
    rel: str,
    model: str,
    tag: str,
    seed: int,
    test_acc: float,
    dataset: str = "mnist",
    steps: int | None = None,
) -> None:
    """A completed 1-epoch run's metrics.json, as the trainer writes it (the keys the
    analysis reads)."""
    spiking = model == "conv_snn"
    config = {
        "model": {"_target_": TARGETS[model],
                  "name": model, "num_steps": steps, "lr": 1e-3, "dropout": 0.0},
        "encoding": {"name": "direct"},
        "neuron": {"name": "leaky", "beta": 0.85},
        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.01, "scheduler": "cosine"},
        "dataset": {"name": dataset},
        "trainer": {"seed": seed, "epochs": 1, "batch_size": 128, "label_smoothing": 0.05},
        "augment": {"shift": 1, "rotate": 0.0, "scale": 0.0, "shear": 0.0},
        "tag": tag,
    }  # fmt: skip
    record = {
        "status": "completed",
        "config": config,
        "history": [{"epoch": 1, "train_loss": 0.1, "train_acc": 0.99, "val_acc": test_acc,
                     "test_acc": None, "time_s": 40.0 if spiking else 10.0, "eval_time_s": 1.0,
                     "lr": 2e-3}],
        "test_acc": test_acc,
        "final_test_acc": test_acc,
        "best_val_acc": test_acc,
        "best_epoch": 1,
        "epochs": 1,
        "epochs_completed": 1,
        "spiking": {"energy_per_inference_uj": 2.5 if spiking else 1.25},
    }  # fmt: skip
    folder = root / rel / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(record))


def _runs(root: Path):
    runs = collect([root]).completed
    return runs.assign(part=runs["tag"].fillna("untagged"))


def _reproduction(root: Path) -> None:
    for seed, (a, s) in enumerate([(0.9900, 0.9880), (0.9910, 0.9890), (0.9905, 0.9870)]):
        _record(root, "round2/conv/reproduction/conv_ann", "conv_ann", "conv_study", seed, a)
        _record(
            root, "round2/conv/reproduction/conv_snn", "conv_snn", "conv_study", seed, s, steps=5
        )


def test_rows_without_records_say_not_run_yet(tmp_path):
    _reproduction(tmp_path)
    table = conv_table(_runs(tmp_path)).set_index("model")
    assert table.loc["Conv ANN", "defaults (%)"] == "99.05 ± 0.05 (n=3)"
    assert table.loc["Conv SNN", "defaults (%)"] == "98.80 ± 0.10 (n=3)"
    for col in ("tuned (%)", "tuned recipe", "Fashion-MNIST, tuned (%)",
                "energy/inference, tuned (µJ)", "train s/epoch, tuned"):  # fmt: skip
        assert (table[col] == NOT_RUN).all(), col
    assert table.loc["Conv SNN", "target"].endswith(f": {NOT_RUN}")


def _tuned(root: Path, snn: list[float], ann: list[float]) -> None:
    for seed, (a, s) in enumerate(zip(ann, snn)):
        _record(root, "round2/conv/tuned/conv_ann", "conv_ann", "conv_tuned", seed, a)
        _record(root, "round2/conv/tuned/conv_snn", "conv_snn", "conv_tuned", seed, s, steps=4)


def test_target_met_with_tuned_and_fashion_numbers(tmp_path):
    _reproduction(tmp_path)
    _tuned(tmp_path, snn=[0.9930, 0.9935, 0.9925], ann=[0.9940, 0.9950, 0.9945])
    _record(tmp_path, "round2/conv/fashion/tuned/conv_snn", "conv_snn", "conv_fashion", 0,
            0.9050, "fashion_mnist", steps=4)  # fmt: skip
    table = conv_table(_runs(tmp_path)).set_index("model")
    snn, ann = table.loc["Conv SNN"], table.loc["Conv ANN"]
    assert snn["tuned (%)"] == "99.30 ± 0.05 (n=3)" and ann["tuned (%)"] == "99.45 ± 0.05 (n=3)"
    assert snn["Fashion-MNIST, tuned (%)"] == "90.50 (n=1)"
    assert ann["Fashion-MNIST, tuned (%)"] == NOT_RUN
    assert (
        snn["energy/inference, tuned (µJ)"] == "2.5"
        and ann["energy/inference, tuned (µJ)"] == "1.25"
    )
    assert snn["train s/epoch, tuned"] == "40" and ann["train s/epoch, tuned"] == "10"
    assert "T=4" in snn["tuned recipe"] and "beta=" in snn["tuned recipe"]
    assert "T=" not in ann["tuned recipe"] and "shift=1" in ann["tuned recipe"]
    assert snn["target"] == ("≥ 99.3 %: met (+0.00); 0.15 behind the conv ANN (≤ 0.2 allowed): met")
    assert ann["target"].startswith("–")


def test_target_missed_says_by_how_much(tmp_path):
    _tuned(tmp_path, snn=[0.9910, 0.9905, 0.9915], ann=[0.9940, 0.9950, 0.9945])
    target = conv_table(_runs(tmp_path)).set_index("model").loc["Conv SNN", "target"]
    assert target == (
        "≥ 99.3 %: missed by 0.20; 0.35 behind the conv ANN (≤ 0.2 allowed): missed by 0.15"
    )


def test_report_and_readme_block_render_with_partial_records(tmp_path):
    root = tmp_path / "results"
    _record(root, "reproduction/ann", "ann", "study", 0, 0.98)  # round one, no conv run yet
    assert "Convolutional models" not in results_block(collect([root]))
    _reproduction(root)
    report = write_study_report(root, tmp_path / "out").read_text(encoding="utf-8")
    section = report[report.index("## 11. Round two: convolutional models") :]
    assert "| Conv SNN | not started |" in section.replace("  ", " ")  # no search yet
    assert "Runs: 6 of 6 recorded runs completed." in section
    assert "98.80 ± 0.10 (n=3)" in section and NOT_RUN in section
    block = results_block(collect([root]))
    assert "Convolutional models" in block and "99.05 ± 0.05 (n=3)" in block


def test_verdict_when_the_snn_leads_or_the_ann_is_missing():
    from analysis.study import conv_verdict

    assert conv_verdict("conv_snn", 99.5, 99.4) == (
        "≥ 99.3 %: met (+0.20); 0.10 ahead of the conv ANN (≤ 0.2 allowed): met"
    )
    assert conv_verdict("conv_snn", 99.0, float("nan")) == (
        "≥ 99.3 %: missed by 0.30; the conv ANN not run yet"
    )
    # level as printed (99.44 and 99.44): "0.00 behind", never "-0.00"
    assert conv_verdict("conv_snn", 99.4400001, 99.4399999) == (
        "≥ 99.3 %: met (+0.14); 0.00 behind the conv ANN (≤ 0.2 allowed): met"
    )


def test_precision_table_sets_bf16_beside_float32():
    """The bf16-mixed runs of the round-two temporal recipe beside its float32 runs; a
    precision without completed runs says so."""
    runs = pd.DataFrame(
        [
            {"dataset": "mnist", "model": "temporal", "part": "tuned2_temporal", "test_acc": a}
            for a in (0.9840, 0.9850)
        ]
        + [
            {
                "dataset": "fashion_mnist",
                "model": "temporal",
                "part": "precision2_temporal",
                "test_acc": 0.5,
            }
        ]  # fmt: skip
    )
    table = precision_table(runs)
    assert list(table["trainer.precision"]) == ["32 (float32)", "bf16-mixed"]
    assert table["test acc. (%)"].iloc[0].startswith("98.45 ± 0.07")
    assert table["test acc. (%)"].iloc[1] == NOT_RUN  # Fashion-MNIST runs are not counted


def test_met_or_missed_compares_what_the_tables_print():
    """Verdicts compare the mean at the 0.01 points it is printed with: 98.396 prints as
    98.40 and meets 98.4; never "missed by 0.00" or "-0.00"."""
    assert met_or_missed(98.396, 98.4) == "met (+0.00)"
    assert met_or_missed(98.3999999, 98.4) == "met (+0.00)"
    assert met_or_missed(98.394, 98.4) == "missed by 0.01"
    assert met_or_missed(98.97, 98.9) == "met (+0.07)"
    assert met_or_missed(98.45, 98.8) == "missed by 0.35"


def test_recorded_dates_say_which_engine_timed_the_runs():
    """The T tables' captions say when their runs started (their s/epoch are the code of
    that time)."""
    one = pd.DataFrame({"started_at": ["2026-11-29T18:19:00+00:00", "2026-11-29T13:21:30"]})
    two = pd.DataFrame({"started_at": ["2026-12-01T01:00:00+00:00", None, "2026-11-29T13:21"]})
    assert recorded_dates(one) == "2026-11-29 13:21–18:19 UTC"
    assert recorded_dates(two) == "2026-11-29 13:21 to 2026-12-01 01:00 UTC"
    assert recorded_dates(pd.DataFrame({"started_at": [None]})) == "unknown"
    assert recorded_dates(pd.DataFrame({"T": [5]})) == "unknown"
