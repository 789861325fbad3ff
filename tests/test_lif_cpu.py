"""The compiled CPU loops of the leaky neuron equal the engine's torch loop: spikes and
membranes bit for bit, gradients (current and beta) to float32 rounding."""

from __future__ import annotations

import itertools

import pytest
import torch

from snnbench import lif_cpu
from snnbench.engine import leaky_sequence
from snnbench.neurons import LIFParams


def run(current, p, beta, compiled: bool, monkeypatch):
    monkeypatch.setattr(lif_cpu, "usable", lambda x: compiled)
    cur = current.clone().requires_grad_(True)
    b = beta.clone().requires_grad_(True)
    spk, mem = leaky_sequence(cur, p, b)
    g = torch.Generator().manual_seed(9)
    w_spk, w_mem = torch.randn(spk.shape, generator=g), torch.randn(mem.shape, generator=g)
    ((spk * w_spk).sum() + (mem * w_mem).sum()).backward()
    return spk.detach(), mem.detach(), cur.grad, b.grad


@pytest.mark.parametrize(
    "reset,surrogate,T",
    list(
        itertools.product(("subtract", "zero", "none"), ("atan", "fast_sigmoid", "sigmoid"), (1, 9))
    ),
)
def test_compiled_loops_equal_the_torch_loop(reset, surrogate, T, monkeypatch):
    p = LIFParams(beta=0.8, threshold=0.7, reset=reset, surrogate=surrogate, slope=3.0)
    current = torch.randn(T, 6, 13, generator=torch.Generator().manual_seed(T)) * 1.5
    beta = torch.tensor(0.8)
    ref = run(current, p, beta, False, monkeypatch)
    got = run(current, p, beta, True, monkeypatch)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert 0 < ref[0].mean() < 1
    for a, b in zip(got[2:], ref[2:]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_used_only_for_float32_on_the_cpu():
    assert lif_cpu.usable(torch.zeros(2, 3, 4))
    assert not lif_cpu.usable(torch.zeros(2, 3, 4, dtype=torch.float64))
