"""Spiking metrics: hand-computed counts, rates, the latency curve, energy, config, real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from snnbench.config import ConfigError, validate
from snnbench.dataio.data import Split
from snnbench.dataio.inputs import Batcher
from snnbench.maths.events import SpikeEvents
from snnbench.maths.synops import is_spike_valued, linear_ops
from snnbench.measure.metrics import (
    activation_sparsity,
    connection_sparsity,
    cumulative_predictions,
    energy_pj,
    firing_rate,
    footprint_bytes,
    latency_accuracy,
    parameter_count,
    settle_steps,
    spiking_metrics,
)
from snnbench.networks.contract import build_model
from snnbench.run.results import METRICS_FILE
from snnbench.run.training import run
from tests.conftest import ROOT, TINY

# nonzero weights per input column: 2, 0, 2, 1
W = torch.tensor(
    [
        [1.0, 0.0, 2.0, 0.0],
        [0.0, 0.0, 3.0, 1.0],
        [4.0, 0.0, 0.0, 0.0],
    ]
)

CONTRACT_KEYS = {
    "n_samples",
    "layers",
    "acs_per_sample",
    "macs_per_sample",
    "synops_per_sample",
    "neuron_updates_per_sample",
    "energy_per_inference_uj",
    "energy_model",
    "n_params",
    "footprint_bytes",
    "connection_sparsity",
    "latency_curve",
    "settle_step_mean",
    "time_s",
}
LAYER_KEYS = {
    "name",
    "in_features",
    "out_features",
    "op",
    "synops_per_sample",
    "dense_ops_per_sample",
    "firing_rate",
    "activation_sparsity",
}


def _dense(x):
    """A batcher's output as a dense tensor (event input is the same spikes)."""
    return x.to_dense() if isinstance(x, SpikeEvents) else x


def _load(run_dir):
    return json.loads((run_dir / METRICS_FILE).read_text())


# ------------------------------------------------------------------- counts by hand


def test_binary_input_counts_acs_summed_over_time():
    # t=1: inputs 0, 1, 3 fire -> 2 + 0 + 1 = 3 pairs; t=2: inputs 2, 3 -> 2 + 1 = 3
    x = torch.tensor([[[1.0, 1.0, 0.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]]])  # [T=2, B=1, 4]
    ops = linear_ops(x, W)
    assert ops.op == "AC" and ops.spike_input
    assert ops.synops == 6
    assert ops.dense == 2 * 4 * 3
    assert (ops.zeros, ops.values) == (3, 8)


def test_analog_input_counts_macs_and_skips_zeros():
    # nonzero inputs 0, 2, 3 -> 2 + 2 + 1 = 5; the zero input and the all-zero column add none
    x = torch.tensor([[0.5, 0.0, -2.0, 1.0]])  # [B=1, 4] (ANN layout)
    ops = linear_ops(x, W)
    assert ops.op == "MAC" and ops.synops == 5 and ops.dense == 12
    # input 1 (whose weights are all zero) firing adds nothing
    assert linear_ops(torch.tensor([[0.0, 7.0, 0.0, 0.0]]), W).synops == 0


def test_signed_spikes_are_acs_and_batches_add():
    x = torch.tensor([[[-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]]])  # [T=1, B=2, 4]
    ops = linear_ops(x, W)
    assert ops.op == "AC" and ops.synops == 2 + (2 + 1)
    total = linear_ops(x[:, :1], W) + linear_ops(x[:, 1:], W)
    assert (total.synops, total.dense, total.spike_input) == (ops.synops, ops.dense, True)
    assert (linear_ops(x, W) + linear_ops(torch.tensor([[0.3, 0, 0, 0]]), W)).op == "MAC"


@pytest.mark.parametrize(
    "values,spikes",
    [
        ([0.0, 1.0, 1.0], True),
        ([0.0, -1.0, 1.0], True),
        ([0.0, 0.0], True),
        ([0.0, 0.5, 1.0], False),
        ([0.0, 2.0], False),
        ([-1.0, -0.25], False),
        ([1.0, 1.0000001], False),
    ],
)
def test_spike_valued_inputs(values, spikes):
    x = torch.tensor(values)
    assert is_spike_valued(x) is spikes
    assert linear_ops(x.reshape(1, -1), torch.ones(2, len(values))).spike_input is spikes


def test_firing_rate_and_sparsity_of_known_spikes():
    s = torch.zeros(2, 2, 5)  # [T, B, N]: 20 entries, 3 spikes
    s[0, 0, 1] = s[1, 0, 1] = s[1, 1, 4] = 1
    assert firing_rate(s) == pytest.approx(3 / 20)
    assert activation_sparsity(s) == pytest.approx(17 / 20)
    assert firing_rate(torch.ones(3, 1, 2)) == 1.0 and activation_sparsity(torch.ones(4)) == 0.0
    assert activation_sparsity(torch.tensor([0.0, 0.2, 0.0, 3.0])) == 0.5  # ReLU outputs


def test_energy_arithmetic():
    assert energy_pj(acs=1000, macs=10, ac_pj=0.9, mac_pj=4.6) == pytest.approx(946.0)
    # the ANN's dense count at 4.6 pJ per MAC: 234,752 MACs ~ 1.08 uJ
    assert energy_pj(0, 234_752, 0.9, 4.6) / 1e6 == pytest.approx(1.0798592)


def test_params_footprint_and_connection_sparsity():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]]))
    layer.register_buffer("beta", torch.tensor(0.9))
    assert parameter_count(layer) == 8
    assert footprint_bytes(layer) == (8 + 1) * 4
    assert connection_sparsity([layer.weight]) == pytest.approx(3 / 6)


# ------------------------------------------------------------------- latency curve


def test_latency_curve_and_settle_on_hand_built_membranes():
    # [T=3, B=2, C=2]; cumulative sums and their argmax:
    # s0 [1,0] [1,3] [1,3] -> 0 1 1;  s1 [0,1] [2,1] [-3,1] -> 1 0 1
    mem = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 1.0]],
            [[0.0, 3.0], [2.0, 0.0]],
            [[0.0, 0.0], [-5.0, 0.0]],
        ]
    )
    preds = cumulative_predictions(mem, torch.zeros_like(mem), "mean_mem")
    assert preds.tolist() == [[0, 1], [1, 0], [1, 1]]
    labels = torch.tensor([1, 1])
    assert latency_accuracy(preds, labels).tolist() == [1, 1, 2]
    assert settle_steps(preds).tolist() == [2, 3]
    # the last cut is the full readout: mean over all steps
    assert preds[-1].tolist() == mem.mean(0).argmax(-1).tolist()


def test_spike_count_readout_counts_spikes():
    spk = torch.zeros(3, 1, 3)  # class 2 spikes at t=1, class 0 at t=2 and t=3
    spk[0, 0, 2] = spk[1, 0, 0] = spk[2, 0, 0] = 1
    preds = cumulative_predictions(torch.zeros(3, 1, 3), spk, "spike_count")
    assert preds[:, 0].tolist() == [2, 0, 0]  # a tie at t=2 goes to the lower class


def test_settle_step_on_a_known_prediction_sequence():
    preds = torch.tensor([[3, 1, 5, 7], [3, 2, 5, 7], [3, 2, 4, 7], [3, 2, 5, 6]])  # [T=4, B=4]
    # never changes -> 1; settles at step 2; changes back at step 4 -> 4; last step differs -> 4
    assert settle_steps(preds).tolist() == [1, 2, 4, 4]


# ------------------------------------------------------------------- the driver


def test_driver_counts_match_brute_force_on_the_models_own_spikes(make_cfg):
    """Hooked counts equal (x != 0) @ (W != 0)^T on layer inputs: x, spikes[0], spikes[1]."""
    cfg = make_cfg("model=temporal", "model.num_steps=4", "model.hidden=[12,8]", "trainer.seed=3")
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.fcs[0].weight.mul_(8)  # make the hidden layers spike
        model.fcs[0].weight[:, :300] = 0  # and some weights zero
        model.fcs[1].weight.mul_(4)
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 10, (7,)))
    batcher = Batcher(cfg)
    cfg.trainer.eval_batch_size = 3  # several batches, the last one short
    rec = spiking_metrics(model, split, batcher, cfg, seed=11)

    gen = torch.Generator().manual_seed(11)
    xs = [_dense(batcher(split.images[i : i + 3], gen)) for i in range(0, 7, 3)]
    x = torch.cat(xs, 1)  # [T, 7, 784], the same draws as the pass
    out = model.eval()(x)
    inputs = [x, *out.spikes[:-1]]
    for layer, fc, inp in zip(rec["layers"], model.fcs, inputs):
        brute = ((inp != 0).float() @ (fc.weight != 0).float().T).sum().item()
        assert layer["synops_per_sample"] == pytest.approx(brute / 7)
        assert layer["op"] == "AC"
        assert layer["dense_ops_per_sample"] == 4 * fc.in_features * fc.out_features
    for layer, s in zip(rec["layers"], out.spikes):
        assert layer["firing_rate"] == pytest.approx(s.mean().item())
        assert layer["activation_sparsity"] == pytest.approx((s == 0).float().mean().item())
    assert 0 < rec["layers"][0]["firing_rate"] < 1
    assert rec["acs_per_sample"] == pytest.approx(
        sum(L["synops_per_sample"] for L in rec["layers"])
    )
    assert rec["macs_per_sample"] == 0
    assert rec["energy_per_inference_uj"] == pytest.approx(rec["acs_per_sample"] * 0.9e-6)
    assert rec["neuron_updates_per_sample"] == 4 * (12 + 8 + 10)
    assert rec["connection_sparsity"] == pytest.approx(12 * 300 / (784 * 12 + 12 * 8 + 8 * 10))
    preds = out.mem_out.cumsum(0).argmax(-1)
    expect = (preds == split.labels).float().mean(1)
    assert rec["latency_curve"] == pytest.approx(expect.tolist())
    assert rec["n_samples"] == 7 and rec["num_steps"] == 4 and CONTRACT_KEYS <= rec.keys()


def test_sample_cap_counts_the_first_images_with_the_same_draws(make_cfg):
    cfg = make_cfg("model=temporal", "model.num_steps=3", "spiking.max_samples=5")
    model = build_model(cfg)
    images = torch.randint(0, 256, (9, 28, 28), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 10, (9,)))
    rec = spiking_metrics(model, split, Batcher(cfg), cfg, seed=5)
    # the whole batch of 9 is encoded (as evaluate does), then the first 5 are counted
    x = _dense(Batcher(cfg)(images, torch.Generator().manual_seed(5))[:, :5])
    out = model.eval()(x)
    brute = ((x != 0).float() @ (model.fcs[0].weight != 0).float().T).sum().item()
    assert rec["n_samples"] == 5
    assert rec["layers"][0]["synops_per_sample"] == pytest.approx(brute / 5)
    correct = (out.mem_out.cumsum(0).argmax(-1) == split.labels[:5]).float().mean(1)
    assert rec["latency_curve"] == pytest.approx(correct.tolist())


# ------------------------------------------------------------------- real runs


def test_temporal_run_latency_curve_ends_at_test_acc(make_cfg, tmp_path):
    run(make_cfg("model=temporal", "model.num_steps=5"))
    rec = _load(tmp_path / "run")
    sp = rec["spiking"]
    assert CONTRACT_KEYS <= sp.keys() and all(LAYER_KEYS <= L.keys() for L in sp["layers"])
    assert len(sp["latency_curve"]) == 5
    assert sp["latency_curve"][-1] == rec["test_acc"]
    assert 1 <= sp["settle_step_mean"] <= 5
    assert [L["op"] for L in sp["layers"]] == ["AC", "AC", "AC"]  # rate-coded input: spikes
    assert sp["macs_per_sample"] == 0 and sp["n_samples"] == 200
    assert sp["energy_model"] == {"mac_pj": 4.6, "ac_pj": 0.9}
    assert sp["n_params"] == rec["n_params"]


def test_single_step_first_layer_macs_then_acs(make_cfg, tmp_path):
    run(make_cfg("model=single_step"))
    sp = _load(tmp_path / "run")["spiking"]
    assert [L["op"] for L in sp["layers"]] == ["MAC", "AC", "AC"]
    assert sp["latency_curve"] == [_load(tmp_path / "run")["test_acc"]]
    assert sp["neuron_updates_per_sample"] == 256 + 128 + 10
    expect = sp["macs_per_sample"] * 4.6e-6 + sp["acs_per_sample"] * 0.9e-6
    assert sp["energy_per_inference_uj"] == pytest.approx(expect)


def test_ann_uses_the_best_validation_weights(make_cfg, tmp_path):
    # lr 0.1 makes epoch 2 the best of 3 (validation), so the last weights are not the best
    run(make_cfg("model=ann", "trainer.epochs=3", "optimizer.lr=0.1", "spiking.ac_pj=0.5"))
    rec = _load(tmp_path / "run")
    assert rec["best_epoch"] != 3, "precondition: the best epoch must not be the last"
    sp = rec["spiking"]
    assert sp["accuracy"] == rec["test_acc"] != rec["final_test_acc"]
    assert sp["latency_curve"] is None and sp["settle_step_mean"] is None
    assert [L["op"] for L in sp["layers"]] == ["MAC", "MAC", "MAC"] and sp["acs_per_sample"] == 0
    assert [L["firing_rate"] for L in sp["layers"]] == [None, None, None]
    assert 0 < sp["layers"][0]["activation_sparsity"] < 1  # ReLU outputs
    assert sp["layers"][2]["activation_sparsity"] is None  # no ReLU after the output layer
    assert sp["dense_ops_per_sample"] == 234_752
    assert sp["energy_model"]["ac_pj"] == 0.5


def test_resumed_run_records_the_same_metrics(make_cfg, tmp_path):
    ov = ("model=temporal", "model.num_steps=3", "trainer.epochs=2")

    def stop(epoch, record):
        if epoch == 1:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run(make_cfg(*ov, run_dir=tmp_path / "a"), on_epoch=stop)
    assert "spiking" not in _load(tmp_path / "a")
    run(make_cfg(*ov, "trainer.resume=true", run_dir=tmp_path / "a"))
    run(make_cfg(*ov, run_dir=tmp_path / "b"))
    a, b = (_load(tmp_path / x)["spiking"] for x in "ab")
    a.pop("time_s"), b.pop("time_s")
    assert a == b and a["latency_curve"][-1] == _load(tmp_path / "a")["test_acc"]


# ------------------------------------------------------------------- config


def test_disabled_metrics_leave_no_section(make_cfg, tmp_path):
    run(make_cfg("model=ann", "spiking.enabled=false"))
    assert "spiking" not in _load(tmp_path / "run")


@pytest.mark.parametrize(
    "override,message",
    [
        ("spiking.mac_pj=-1", "spiking.mac_pj=-1.0 is not allowed; it must be a number >= 0"),
        ("spiking.ac_pj=nan", "spiking.ac_pj=nan is not allowed"),
        ("spiking.max_samples=0", "spiking.max_samples=0 is not allowed"),
    ],
)
def test_bad_spiking_values_fail_with_one_line(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(make_cfg(override))


def test_defaults_and_cli_error(make_cfg, tmp_path):
    sp = make_cfg().spiking
    assert (sp.enabled, sp.mac_pj, sp.ac_pj, sp.max_samples) == (True, 4.6, 0.9, None)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snnbench",
            *TINY,
            "spiking.ac_pj=-0.5",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .endswith("spiking.ac_pj=-0.5 is not allowed; it must be a number >= 0 (pJ)")
    )
    assert not (tmp_path / METRICS_FILE).exists()


def test_chunked_counting_matches(monkeypatch):
    from snnbench.maths import synops

    x = (torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    whole = linear_ops(x, W)
    monkeypatch.setattr(synops, "_MAX_ROWS", 4)  # 15 rows -> chunks of 4, 4, 4, 3
    assert synops.linear_ops(x, W) == whole and whole.op == "AC"
    x[1, 2, 0] = 0.5
    assert synops.linear_ops(x, W) == linear_ops(x, W) and linear_ops(x, W).op == "MAC"


def _close(a, b, path=""):
    """Recursive comparison of two spiking records (numbers to float noise)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            if k != "time_s":
                _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


@pytest.mark.parametrize("neuron", ["leaky", "synaptic"])
@pytest.mark.parametrize("encoding", ["rate", "latency", "delta", "direct"])
def test_both_engines_give_the_same_spiking_record(make_cfg, encoding, neuron):
    """Operations are counted per time step whatever shortcut an engine takes (the fused
    engine runs layer 1 once under direct coding, or on events under spike codings)."""
    common = ("model=temporal", "model.num_steps=5", "model.hidden=[24,12]", "trainer.seed=2")
    common += (f"encoding={encoding}", f"neuron={neuron}", "trainer.eval_batch_size=4")
    records = []
    models = []
    for engine in ("fused", "snntorch"):
        cfg = make_cfg(*common, f"model.engine={engine}")
        torch.manual_seed(0)
        model = build_model(cfg)
        if models:
            model.fcs.load_state_dict(models[0].fcs.state_dict())
        else:
            with torch.no_grad():  # make every layer spike
                for fc in model.fcs:
                    fc.weight.mul_(4.0)
        models.append(model)
        images = torch.randint(
            0, 256, (10, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
        )
        split = Split(images, torch.arange(10) % 10)
        records.append(spiking_metrics(model, split, Batcher(cfg), cfg, seed=3))
    fused, ref = records
    assert ref["layers"][1]["synops_per_sample"] > 0
    assert ref["layers"][0]["dense_ops_per_sample"] == 5 * 784 * 24
    _close(fused, ref)
