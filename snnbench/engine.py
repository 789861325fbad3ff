"""Neuron recurrences over time: ``[T, B, N]`` input current -> ``[T, B, N]`` spikes, membranes.

The fused engine runs each layer's recurrence over all T steps once the layer's Linear
has been applied to all ``T*B`` rows (layer-by-layer execution).
"""

from __future__ import annotations

import torch

from snnbench.neurons import LeakyState, LIFParams, SynapticState, leaky_step, synaptic_step


def leaky_sequence(
    current: torch.Tensor, p: LIFParams, beta: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``snn.Leaky`` over T steps from a zero state.

    current: ``[T, B, N]`` input current. Returns (spikes, membranes), each ``[T, B, N]``.
    """
    state = LeakyState(torch.zeros_like(current[0]))
    spikes, mems = [], []
    for t in range(current.shape[0]):
        spk, state = leaky_step(current[t], state, p, beta)
        spikes.append(spk)
        mems.append(state.mem)
    return torch.stack(spikes), torch.stack(mems)


def synaptic_sequence(
    current: torch.Tensor, p: LIFParams, beta: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``snn.Synaptic`` over T steps from a zero state; ``[T, B, N]`` in and out."""
    zero = torch.zeros_like(current[0])
    state = SynapticState(zero, zero)
    spikes, mems = [], []
    for t in range(current.shape[0]):
        spk, state = synaptic_step(current[t], state, p, beta)
        spikes.append(spk)
        mems.append(state.mem)
    return torch.stack(spikes), torch.stack(mems)


def neuron_sequence(
    neuron: str, current: torch.Tensor, p: LIFParams, beta: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to :func:`leaky_sequence` or :func:`synaptic_sequence` by neuron name."""
    if neuron == "leaky":
        return leaky_sequence(current, p, beta)
    if neuron == "synaptic":
        return synaptic_sequence(current, p, beta)
    raise ValueError(f"neuron.name={neuron!r} is not known")
