"""snnbench's spiking layer for user and built-in models: :class:`LIF`, a layer of leaky
(or synaptic) neurons run over all T steps at once by the fused engine
(:func:`snnbench.maths.engine.neuron_sequence`), with snnTorch's maths (``snn.Leaky`` /
``snn.Synaptic``, subtract/zero/none reset, detached reset, surrogate gradients)."""

from __future__ import annotations

import torch
from torch import nn

from snnbench.maths.engine import neuron_sequence
from snnbench.networks.contract import Neuron


class LIF(nn.Module):
    """Input current ``[T, B, ...]`` -> (spikes ``[T, B, ...]`` in {0, 1}, membranes
    ``[T, B, ...]``), from a zero state; every neuron shares ``neuron``'s parameters.

    ``beta`` is a learnable parameter with ``neuron.learn_beta``, else a buffer.
    """

    def __init__(self, neuron: Neuron):
        super().__init__()
        self.kind, self.params = neuron.kind, neuron.params
        beta = torch.tensor(float(neuron.params.beta))
        if neuron.learn_beta:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta)

    def forward(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T, B = current.shape[:2]
        spk, mem = neuron_sequence(self.kind, current.reshape(T, B, -1), self.params, self.beta)
        return spk.view(current.shape), mem.view(current.shape)

    def extra_repr(self) -> str:
        p = self.params
        return f"{self.kind}, threshold={p.threshold}, reset={p.reset}, surrogate={p.surrogate}"
