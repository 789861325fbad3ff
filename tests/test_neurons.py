"""Exact values of the LIF / Synaptic updates against snn-semantics.md and snnTorch."""

from __future__ import annotations

import math

import pytest
import snntorch as snn
import torch

from snnbench.maths.neurons import (
    LeakyState,
    LIFParams,
    SynapticState,
    leaky_step,
    spike,
    surrogate_grad,
    synaptic_step,
)


def test_leaky_subtract_exact():
    p = LIFParams(beta=0.5, threshold=1.0, reset="subtract")
    inp = torch.tensor([[0.6, 1.2, 3.0]])
    spk, s = leaky_step(inp, LeakyState(torch.zeros(1, 3)), p)
    assert torch.allclose(s.mem, torch.tensor([[0.6, 1.2, 3.0]]))
    assert spk.tolist() == [[0.0, 1.0, 1.0]]
    spk, s = leaky_step(inp, s, p)
    # mem = 0.5*mem + inp - reset*thr, reset = H(mem_prev - 1)
    assert torch.allclose(s.mem, torch.tensor([[0.9, 0.6 + 1.2 - 1.0, 1.5 + 3.0 - 1.0]]))
    assert spk.tolist() == [[0.0, 0.0, 1.0]]


def test_leaky_zero_and_none_exact():
    inp = torch.tensor([[2.0, 0.5]])
    zero = LIFParams(beta=0.5, reset="zero")
    _, s = leaky_step(inp, LeakyState(torch.tensor([[1.5, 0.8]])), zero)
    # reset where mem_prev > 1: mem = beta*(1-reset)*mem_prev + inp
    assert torch.allclose(s.mem, torch.tensor([[2.0, 0.9]]))
    none = LIFParams(beta=0.5, reset="none")
    _, s = leaky_step(inp, LeakyState(torch.tensor([[1.5, 0.8]])), none)
    assert torch.allclose(s.mem, torch.tensor([[2.75, 0.9]]))


def test_threshold_is_strict():
    p = LIFParams(threshold=1.0)
    spk, _ = leaky_step(torch.tensor([[1.0, 1.0001]]), LeakyState(torch.zeros(1, 2)), p)
    assert spk.tolist() == [[0.0, 1.0]]


def test_synaptic_exact():
    p = LIFParams(alpha=0.5, beta=0.25, threshold=1.0, reset="subtract")
    s = SynapticState(torch.tensor([[1.0]]), torch.tensor([[2.0]]))
    spk, s2 = synaptic_step(torch.tensor([[0.5]]), s, p)
    # syn = 0.5*1 + 0.5 = 1.0; mem = 0.25*2 + 1.0 - 1*1 = 0.5
    assert s2.syn.item() == pytest.approx(1.0)
    assert s2.mem.item() == pytest.approx(0.5)
    assert spk.item() == 0.0
    pz = LIFParams(alpha=0.5, beta=0.25, threshold=1.0, reset="zero")
    _, s3 = synaptic_step(torch.tensor([[0.5]]), s, pz)
    assert s3.syn.item() == pytest.approx(1.0)  # syn untouched by the zero reset
    assert s3.mem.item() == pytest.approx(0.0)  # new membrane zeroed where mem_prev fired


@pytest.mark.parametrize(
    "surrogate,slope", [("atan", 2.0), ("fast_sigmoid", 25.0), ("sigmoid", 25.0)]
)
def test_surrogate_gradient_values(surrogate, slope):
    u = torch.tensor([-0.3, 0.0, 0.2], requires_grad=True)
    spike(u, surrogate, slope).sum().backward()
    x = u.detach()
    expected = {
        "atan": (slope / 2) / (1 + (math.pi / 2 * slope * x) ** 2),
        "fast_sigmoid": 1 / (slope * x.abs() + 1) ** 2,
        "sigmoid": slope * torch.exp(-slope * x) / (torch.exp(-slope * x) + 1) ** 2,
    }[surrogate]
    assert torch.allclose(u.grad, expected)
    assert torch.allclose(surrogate_grad(x, surrogate, slope), expected)
    assert surrogate_grad(torch.tensor(0.0), "atan", 2.0).item() == pytest.approx(1.0)


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("neuron", ["leaky", "synaptic"])
def test_steps_match_snntorch(neuron, reset):
    torch.manual_seed(0)
    p = LIFParams(beta=0.8, alpha=0.7, threshold=0.7, reset=reset)
    cur = torch.randn(6, 4, 5)
    if neuron == "leaky":
        ref = snn.Leaky(beta=p.beta, threshold=p.threshold, reset_mechanism=reset)
        mem = ref.reset_mem()
        state = LeakyState(torch.zeros(4, 5))
    else:
        ref = snn.Synaptic(alpha=p.alpha, beta=p.beta, threshold=p.threshold, reset_mechanism=reset)
        syn, mem = ref.reset_mem()
        state = SynapticState(torch.zeros(4, 5), torch.zeros(4, 5))
    for t in range(6):
        if neuron == "leaky":
            spk_ref, mem = ref(cur[t], mem)
            spk, state = leaky_step(cur[t], state, p)
        else:
            spk_ref, syn, mem = ref(cur[t], syn, mem)
            spk, state = synaptic_step(cur[t], state, p)
            assert torch.allclose(state.syn, syn, atol=1e-6)
        assert torch.equal(spk, spk_ref)
        assert torch.allclose(state.mem, mem, atol=1e-6)
    snn.SpikingNeuron.instances.clear()


def test_snntorch_engine_leaves_other_neurons_registered():
    """Building a model with the snntorch engine must not clear snnTorch's registry for
    neurons the user made (only ours are taken out)."""
    import snntorch as snn

    from snnbench.networks.contract import build_model
    from tests.conftest import compose_cfg

    mine = snn.Leaky(beta=0.5)
    cfg = compose_cfg(["model=temporal", "model.engine=snntorch", "model.num_steps=2"], "/tmp/x")
    model = build_model(cfg)
    registry = snn.SpikingNeuron.instances
    assert any(n is mine for n in registry)
    assert not any(n is lif for n in registry for lif in model.lifs)
