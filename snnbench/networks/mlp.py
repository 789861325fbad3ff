"""The study's models: an ANN MLP and a spiking MLP with two engines (fused, snntorch).

Both spiking engines compute the same function from the same weights: ``fused`` applies
each Linear once over all ``T*B`` rows and then runs the neuron recurrence over T
(:mod:`snnbench.maths.engine`); ``snntorch`` steps ``snn.Leaky``/``snn.Synaptic`` T times (the
study's reference code). The fused engine also takes layer 1's input as
:class:`~snnbench.maths.events.SpikeEvents` (binary spikes as per-step index lists, CPU), and then
sums weight columns instead of multiplying by zeros (:mod:`snnbench.maths.events`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from omegaconf import DictConfig
from torch import nn

from snnbench.maths.dropout import Dropout, StepMasks
from snnbench.maths.engine import neuron_sequence
from snnbench.maths.events import SpikeEvents, event_linear
from snnbench.maths.neurons import LIFParams
from snnbench.networks import hooks
from snnbench.networks.contract import Neuron, build_model

__all__ = ["ANN", "SNNOutput", "SpikingMLP", "ann_mlp", "build_model", "spiking_mlp"]


class SNNOutput(NamedTuple):
    """logits ``[B, C]``; spikes: one ``[T, B, N]`` tensor per LIF layer (output last);
    mem_out: output-layer membrane ``[T, B, C]``."""

    logits: torch.Tensor
    spikes: list[torch.Tensor]
    mem_out: torch.Tensor


class ANN(nn.Module):
    """Linear-ReLU-...-Linear on images ``[B, ...]`` (flattened to ``[B, in]``) -> logits
    ``[B, C]``; ``dropout``: p of each hidden ReLU's output while training."""

    def __init__(self, sizes: list[int], dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.dropout = Dropout(dropout, time_first=False)

    @property
    def fcs(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dropout.active:
            return self.net(x.flatten(1))
        h = x.flatten(1)
        for layer in self.net:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                h = self.dropout(h)
        return h


def _snntorch_surrogate(surrogate: str, slope: float):
    from snntorch import surrogate as sg

    if surrogate == "atan":
        return sg.atan(alpha=slope)
    return {"fast_sigmoid": sg.fast_sigmoid, "sigmoid": sg.sigmoid}[surrogate](slope=slope)


class SpikingMLP(nn.Module):
    """Linear + LIF layers; input ``[T, B, in]`` (or ``[T, B, ...]``, flattened) ->
    :class:`SNNOutput`.

    readout "mean_mem": logits = output membrane averaged over T (the study's);
    "spike_count": logits = output spikes summed over T. ``dropout``: p of each hidden
    layer's spikes while training, one mask per sample shared by the T steps
    (``dropout_mask="sample"``) or one per step (``"step"``); see :mod:`snnbench.maths.dropout`.
    """

    def __init__(
        self,
        sizes: list[int],
        params: LIFParams,
        neuron: str = "leaky",
        readout: str = "mean_mem",
        engine: str = "fused",
        learn_beta: bool = False,
        dropout: float = 0.0,
        dropout_mask: str = "sample",
    ):
        super().__init__()
        self.params, self.neuron, self.readout, self.engine = params, neuron, readout, engine
        self.dropout = Dropout(dropout, dropout_mask)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        n_layers = len(self.fcs)
        if engine == "fused":
            beta = [torch.tensor(float(params.beta)) for _ in range(n_layers)]
            if learn_beta:
                self.betas = nn.ParameterList(nn.Parameter(b) for b in beta)
            else:
                for i, b in enumerate(beta):
                    self.register_buffer(f"beta_{i}", b)
        elif engine == "snntorch":
            import snntorch as snn

            kw = dict(
                beta=params.beta,
                threshold=params.threshold,
                learn_beta=learn_beta,
                spike_grad=_snntorch_surrogate(params.surrogate, params.surrogate_slope),
                reset_mechanism=params.reset,
            )
            if neuron == "leaky":
                self.lifs = nn.ModuleList(snn.Leaky(**kw) for _ in range(n_layers))
            else:
                self.lifs = nn.ModuleList(
                    snn.Synaptic(alpha=params.alpha, **kw) for _ in range(n_layers)
                )
            # snnTorch keeps every neuron ever built in a class-level list: take ours out
            # (and only ours: other neurons of the process stay registered)
            ours = {id(lif) for lif in self.lifs}
            registry = snn.SpikingNeuron.instances
            registry[:] = [n for n in registry if id(n) not in ours]
        else:
            raise ValueError(f"model.engine={engine!r} is not known")
        self.learn_beta = learn_beta

    def layer_betas(self) -> list[torch.Tensor]:
        """The (possibly learnable) beta of each layer, as 0-dim tensors."""
        if self.engine == "snntorch":
            return [lif.beta for lif in self.lifs]
        if self.learn_beta:
            return list(self.betas)
        return [getattr(self, f"beta_{i}") for i in range(len(self.fcs))]

    def forward(self, x: torch.Tensor | SpikeEvents) -> SNNOutput:
        """x: ``[T, B, in]`` input, or :class:`SpikeEvents` (binary input as events)."""
        if not isinstance(x, SpikeEvents) and x.dim() > 3:
            x = x.flatten(2)  # images [T, B, C, H, W] -> [T, B, C*H*W] (a view)
        if self.engine == "fused":
            spikes, mem = self._forward_fused(x)
        else:
            if isinstance(x, SpikeEvents):
                x = x.to_dense()
            spikes, mem = self._forward_snntorch(x)
        if self.readout == "spike_count":
            logits = spikes[-1].sum(0)
        else:
            logits = mem.mean(0)
        return SNNOutput(logits, spikes, mem)

    def _forward_fused(
        self, x: torch.Tensor | SpikeEvents
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        T, B = x.shape[:2]
        spikes: list[torch.Tensor] = []
        h = x
        last = len(self.fcs) - 1
        for i, (fc, beta) in enumerate(zip(self.fcs, self.layer_betas())):
            if isinstance(h, SpikeEvents):  # sum the weight columns of the inputs that spiked
                cur = event_linear(h, fc)
                hooks.count_events(fc, h)  # counted by the spiking metrics, step by step
            elif h.stride(0) == 0:  # the same input at every step (direct encoding): one Linear
                with hooks.repeated(T):  # counted as the T applications it stands for
                    cur = fc(h[0]).unsqueeze(0).expand(T, B, -1)
            else:
                cur = fc(h.reshape(T * B, -1)).reshape(T, B, -1)
            spk, mem = neuron_sequence(self.neuron, cur, self.params, beta)
            spikes.append(spk)
            h = self.dropout(spk) if i < last else spk  # the next layer's input
        return spikes, mem

    def _forward_snntorch(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        states = [
            (lif.reset_mem(),) if self.neuron == "leaky" else lif.reset_mem() for lif in self.lifs
        ]
        spk_rec: list[list[torch.Tensor]] = [[] for _ in self.fcs]
        mem_rec = []
        masks = StepMasks(self.dropout, x.shape[0], len(self.fcs) - 1)
        for t in range(x.shape[0]):
            h = x[t]
            for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
                out = lif(fc(h), *states[i])
                h, states[i] = out[0], tuple(out[1:])
                spk_rec[i].append(h)
                h = masks.apply(i, t, h)
            mem_rec.append(states[-1][-1])
        return [torch.stack(s) for s in spk_rec], torch.stack(mem_rec)


def lif_params(neuron: DictConfig) -> LIFParams:
    """LIFParams from the ``neuron`` config group."""
    return Neuron.from_cfg(neuron).params


def _features(input_shape: Sequence[int]) -> int:
    return int(math.prod(input_shape))


def ann_mlp(
    hidden: list[int], input_shape: Sequence[int], num_classes: int, dropout: float = 0.0
) -> ANN:
    """``model=ann``: the flattened image through Linear-ReLU layers of sizes ``hidden``."""
    return ANN([_features(input_shape), *hidden, num_classes], dropout=dropout)


def spiking_mlp(
    hidden: list[int],
    input_shape: Sequence[int],
    num_classes: int,
    neuron: Neuron,
    readout: str = "mean_mem",
    engine: str = "fused",
    dropout: float = 0.0,
    dropout_mask: str = "sample",
) -> SpikingMLP:
    """``model=temporal`` / ``single_step``: Linear + LIF layers of sizes ``hidden``."""
    return SpikingMLP(
        [_features(input_shape), *hidden, num_classes],
        neuron.params,
        neuron=neuron.kind,
        readout=readout,
        engine=engine,
        learn_beta=neuron.learn_beta,
        dropout=dropout,
        dropout_mask=dropout_mask,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
