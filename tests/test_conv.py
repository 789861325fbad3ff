"""Convolutional models: the fused multi-step ConvSNN equals snnTorch's step loop (outputs
and gradients), direct coding runs the first convolution once, sizes are configurable,
and both models train end to end with their spiking record."""

from __future__ import annotations

import json

import pytest
import torch

from snnbench.config import ConfigError
from snnbench.maths.neurons import LIFParams
from snnbench.networks.contract import Neuron, build_model
from snnbench.networks.conv import ConvANN, ConvSNN
from snnbench.networks.hooks import Recorder
from snnbench.run.training import run

SHAPE = (1, 16, 16)


def _pair(kind: str, reset: str, readout: str, learn_beta: bool = False):
    neuron = Neuron(kind, LIFParams(beta=0.8, alpha=0.7, threshold=0.5, reset=reset), learn_beta)
    kw = dict(channels=(3, 5), kernel_size=3, pool=2, readout=readout)
    torch.manual_seed(0)
    fused = ConvSNN(SHAPE, 4, neuron, engine="fused", **kw)
    ref = ConvSNN(SHAPE, 4, neuron, engine="snntorch", **kw)
    with torch.no_grad():
        for c in fused.convs:
            c.weight.mul_(3)  # make every layer spike
    ref.convs.load_state_dict(fused.convs.state_dict())
    ref.fc.load_state_dict(fused.fc.state_dict())
    return fused, ref


def _inputs(direct: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if direct:  # the analog image at every step: a stride-0 view, as the direct encoder gives
        return torch.rand(3, *SHAPE, generator=g).unsqueeze(0).expand(6, 3, *SHAPE)
    return (torch.rand(6, 3, *SHAPE, generator=g) < 0.4).float()


@pytest.mark.parametrize("direct", [False, True], ids=["spikes", "direct"])
@pytest.mark.parametrize(
    "kind,reset,readout",
    [
        ("leaky", "subtract", "mean_mem"),
        ("leaky", "zero", "spike_count"),
        ("synaptic", "subtract", "mean_mem"),
    ],
)
def test_fused_equals_snntorch_step_loop_outputs_and_gradients(kind, reset, readout, direct):
    fused, ref = _pair(kind, reset, readout)
    outs, grads = [], []
    for model in (fused, ref):
        x = _inputs(direct)  # direct: kept a stride-0 view (clone would copy it)
        if not direct:
            x.requires_grad_(True)
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 3]))
        loss = loss + out.mem_out.square().mean()
        loss.backward()
        outs.append(out)
        grads.append([model.convs[0].weight.grad, model.convs[1].weight.grad, model.fc.weight.grad])
        grads[-1].append(x.grad if not direct else model.convs[0].bias.grad)
    assert _inputs(direct).stride(0) == (0 if direct else 3 * 16 * 16)
    a, b = outs
    for s, r in zip(a.spikes, b.spikes):
        assert torch.equal(s, r)
    assert all(s.sum() > 0 for s in a.spikes[:-1])
    torch.testing.assert_close(a.mem_out, b.mem_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-6)
    for g, h in zip(*grads):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)


def test_learnable_beta_gets_the_snntorch_gradient():
    fused, ref = _pair("leaky", "subtract", "mean_mem", learn_beta=True)
    for model in (fused, ref):
        model(_inputs(False)).logits.sum().backward()
    for lif_f, lif_r in zip(fused.lifs, ref.lifs):
        torch.testing.assert_close(lif_f.beta.grad, lif_r.beta.grad, rtol=1e-4, atol=1e-6)


def test_direct_coding_runs_the_first_convolution_once_and_counts_it_per_step():
    fused, _ = _pair("leaky", "subtract", "mean_mem")
    calls = []
    fused.convs[0].register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    rec = Recorder(fused)
    x = _inputs(True)
    with torch.no_grad():
        fused(x)
    rec.remove()
    assert calls == [3]  # B images, not T*B
    dense = Recorder(fused)
    with torch.no_grad():
        fused(x.contiguous())
    dense.remove()
    assert calls == [3, 18]
    assert rec.synaptic[0].ops == dense.synaptic[0].ops  # counted as the 6 steps it stands for


def test_default_sizes_are_the_tutorial_csnn(make_cfg):
    snn = build_model(make_cfg("model=conv_snn"))
    assert [tuple(c.weight.shape) for c in snn.convs] == [(12, 1, 5, 5), (64, 12, 5, 5)]
    assert tuple(snn.fc.weight.shape) == (10, 64 * 4 * 4)
    ann = build_model(make_cfg("model=conv_ann"))
    assert isinstance(ann, ConvANN) and tuple(ann.fc.weight.shape) == (10, 1024)
    assert ann(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_sizes_that_do_not_fit_are_one_line(make_cfg):
    cfg = make_cfg("model=conv_snn", "model.channels=[4,4,4]", "model.kernel_size=7")
    with pytest.raises(ConfigError, match=r"model._target_=.*shrink .* to nothing") as err:
        build_model(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ("model=conv_snn", "model.num_steps=2", "model.channels=[4,8]", "encoding=direct"),
        ("model=conv_ann", "model.channels=[4,8]"),
    ],
    ids=["conv_snn", "conv_ann"],
)
def test_conv_models_train_and_record_their_costs(make_cfg, tmp_path, args):
    run(make_cfg(*args))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["model"] == args[0].split("=")[1]
    sp = record["spiking"]
    names = [L["name"] for L in sp["layers"]]
    assert names == ["convs.0", "convs.1", "fc"]
    assert sp["layers"][0]["op"] == "MAC"
    if args[0] == "model=conv_snn":
        assert [L["op"] for L in sp["layers"][1:]] == ["AC", "AC"]
        # T * 4 outputs * 24 * 24 positions * 25 weights
        assert sp["layers"][0]["dense_ops_per_sample"] == 2 * 4 * 24 * 24 * 25
        assert len(sp["spiking_layers"]) == 3 and sp["latency_curve"] is not None
        assert sp["layers"][0]["firing_rate"] is not None
    else:
        assert sp["layers"][0]["dense_ops_per_sample"] == 4 * 24 * 24 * 25
        assert sp["spiking_layers"] == [] and sp["latency_curve"] is None
