"""The compiled CPU loops of the leaky and synaptic neurons equal the engine's torch loop:
spikes and membranes bit for bit, gradients (current and beta) to float32 rounding, on the
calling thread and split over threads, in one block and across several."""

from __future__ import annotations

import itertools

import pytest
import torch

from snnbench.maths import events, lif_cpu
from snnbench.maths.engine import leaky_sequence, synaptic_sequence
from snnbench.maths.neurons import LIFParams


def run(sequence, current, p, beta, compiled: bool, monkeypatch, grads=("spk", "mem")):
    monkeypatch.setattr(lif_cpu, "usable", lambda x: compiled)
    cur = current.clone().requires_grad_(True)
    b = beta.clone().requires_grad_(True)
    spk, mem = sequence(cur, p, b)
    g = torch.Generator().manual_seed(9)
    w_spk, w_mem = torch.randn(spk.shape, generator=g), torch.randn(mem.shape, generator=g)
    loss = 0
    if "spk" in grads:
        loss = loss + (spk * w_spk).sum()
    if "mem" in grads:
        loss = loss + (mem * w_mem).sum()
    loss.backward()
    return spk.detach(), mem.detach(), cur.grad, b.grad


CASES = list(
    itertools.product(
        ("leaky", "synaptic"),
        ("subtract", "zero", "none"),
        ("atan", "fast_sigmoid", "sigmoid"),
        (1, 9),
    )
)


@pytest.mark.parametrize("neuron,reset,surrogate,T", CASES)
def test_compiled_loops_equal_the_torch_loop(neuron, reset, surrogate, T, monkeypatch):
    sequence = leaky_sequence if neuron == "leaky" else synaptic_sequence
    p = LIFParams(beta=0.8, alpha=0.7, threshold=0.7, reset=reset, surrogate=surrogate, slope=3.0)
    current = torch.randn(T, 6, 13, generator=torch.Generator().manual_seed(T)) * 1.5
    beta = torch.tensor(0.8)
    ref = run(sequence, current, p, beta, False, monkeypatch)
    got = run(sequence, current, p, beta, True, monkeypatch)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert 0 < ref[0].mean() < 1
    for a, b in zip(got[2:], ref[2:]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neuron,threads", [("leaky", 1), ("leaky", 2), ("synaptic", 2)])
@pytest.mark.parametrize("grads", [("spk",), ("mem",), ()])
def test_blocks_threads_and_absent_gradients(neuron, threads, grads, monkeypatch):
    """Several column blocks (B*N > BLOCK, not a multiple), split over threads when the size
    reaches PARALLEL_MIN; gradients of spikes only, membranes only, or neither."""
    sequence = leaky_sequence if neuron == "leaky" else synaptic_sequence
    monkeypatch.setattr(events, "PARALLEL_MIN", 0 if threads > 1 else 1 << 40)
    p = LIFParams(beta=0.9, alpha=0.8, reset="zero")
    current = torch.randn(7, 11, 400, generator=torch.Generator().manual_seed(3)) * 1.2
    assert current[0].numel() > 2 * lif_cpu.BLOCK
    beta = torch.tensor(0.9)
    if not grads:  # nothing reaches the neurons: autograd never calls backward
        spk, mem = sequence(current, p, beta)
        assert 0 < spk.mean() < 1
        return
    ref = run(sequence, current, p, beta, False, monkeypatch, grads)
    got = run(sequence, current, p, beta, True, monkeypatch, grads)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    for a, b in zip(got[2:], ref[2:]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_used_only_for_float32_on_the_cpu():
    assert lif_cpu.usable(torch.zeros(2, 3, 4))
    assert not lif_cpu.usable(torch.zeros(2, 3, 4, dtype=torch.float64))
