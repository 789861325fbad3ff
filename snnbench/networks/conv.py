"""Convolutional models: ``model=conv_snn`` and ``model=conv_ann``.

The layers of snnTorch's tutorial CSNN, ``12C5-MP2-64C5-MP2-FC10`` by default
(``channels``, ``kernel_size``, ``pool`` configurable): each block is a convolution, a max
pool, then leaky neurons (:class:`ConvSNN`) or a ReLU (:class:`ConvANN`); a Linear to the
classes ends it (followed by output neurons in the SNN).

:class:`ConvSNN` is multi-step with ``engine="fused"``: each convolution runs once over all
``T*B`` frames, and under direct coding (the same input at every step, a stride-0 tensor)
the first convolution and pool run once per sample and are broadcast over T; the neuron
recurrences run in the fused engine (:class:`snnbench.networks.layers.LIF`). ``engine="snntorch"``
steps ``snn.Leaky`` / ``snn.Synaptic`` through T (the reference; same function, same weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from snnbench.maths.dropout import Dropout, StepMasks
from snnbench.networks import hooks
from snnbench.networks.contract import Neuron
from snnbench.networks.layers import LIF
from snnbench.networks.mlp import SNNOutput


def _convs(
    input_shape: Sequence[int], channels: Sequence[int], kernel_size: int, pool: int
) -> tuple[nn.ModuleList, int]:
    """The convolutions and the number of features after the last pool (flattened)."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape {tuple(input_shape)}: a conv model needs images (C, H, W)")
    if not channels or any(int(c) < 1 for c in channels):
        raise ValueError(f"model.channels={list(channels)}: a non-empty list of counts >= 1")
    if kernel_size < 1 or pool < 1:
        raise ValueError(f"model.kernel_size={kernel_size}, model.pool={pool}: both must be >= 1")
    c, h, w = (int(d) for d in input_shape)
    convs = nn.ModuleList()
    for out in channels:
        convs.append(nn.Conv2d(c, int(out), kernel_size))
        c, h, w = int(out), (h - kernel_size + 1) // pool, (w - kernel_size + 1) // pool
        if h < 1 or w < 1:
            raise ValueError(
                f"model.channels={list(channels)} with kernel_size={kernel_size}, pool={pool} "
                f"shrink {tuple(input_shape)} images to nothing; use fewer blocks or smaller sizes"
            )
    return convs, c * h * w


class ConvANN(nn.Module):
    """(Conv-MaxPool-ReLU) blocks then a Linear: images ``[B, C, H, W]`` -> logits ``[B, K]``;
    ``dropout``: p of each block's output while training."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (12, 64),
        kernel_size: int = 5,
        pool: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.convs, features = _convs(input_shape, channels, kernel_size, pool)
        self.pool = nn.MaxPool2d(pool)
        self.fc = nn.Linear(features, num_classes)
        self.dropout = Dropout(dropout, time_first=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = self.dropout(torch.relu(self.pool(conv(x))))
        return self.fc(x.flatten(1))


class ConvSNN(nn.Module):
    """(Conv-MaxPool-LIF) blocks then Linear-LIF: ``[T, B, C, H, W]`` -> :class:`SNNOutput`
    (spikes of each LIF layer ``[T, B, ...]``, output membrane ``[T, B, K]``).

    readout ``mean_mem``: logits = output membrane averaged over T; ``spike_count``: output
    spikes summed over T. ``dropout``: p of each block's spikes while training, one mask per
    sample shared by the T steps (``dropout_mask="sample"``) or one per step (``"step"``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        neuron: Neuron,
        channels: Sequence[int] = (12, 64),
        kernel_size: int = 5,
        pool: int = 2,
        readout: str = "mean_mem",
        engine: str = "fused",
        dropout: float = 0.0,
        dropout_mask: str = "sample",
    ):
        super().__init__()
        if readout not in ("mean_mem", "spike_count"):
            raise ValueError(f"model.readout={readout!r}: choose mean_mem or spike_count")
        if engine not in ("fused", "snntorch"):
            raise ValueError(f"model.engine={engine!r}: choose fused or snntorch")
        self.readout, self.engine, self.neuron = readout, engine, neuron
        self.convs, features = _convs(input_shape, channels, kernel_size, pool)
        self.pool = nn.MaxPool2d(pool)
        self.fc = nn.Linear(features, num_classes)
        self.dropout = Dropout(dropout, dropout_mask)
        n_lif = len(self.convs) + 1
        if engine == "fused":
            self.lifs = nn.ModuleList(LIF(neuron) for _ in range(n_lif))
        else:
            self.lifs = nn.ModuleList(neuron.snntorch() for _ in range(n_lif))

    def forward(self, x: torch.Tensor) -> SNNOutput:
        """x: ``[T, B, C, H, W]`` (stride 0 on T under direct coding)."""
        if self.engine == "fused":
            spikes, mem = self._forward_fused(x)
        else:
            spikes, mem = self._forward_snntorch(x)
        logits = spikes[-1].sum(0) if self.readout == "spike_count" else mem.mean(0)
        return SNNOutput(logits, spikes, mem)

    def _forward_fused(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        T, B = x.shape[:2]
        spikes: list[torch.Tensor] = []
        h = x
        for i, (conv, lif) in enumerate(zip(self.convs, self.lifs)):
            if i == 0 and T > 1 and h.stride(0) == 0:  # one image per sample, every step
                with hooks.repeated(T):
                    cur = self.pool(conv(h[0]))
                cur = cur.unsqueeze(0).expand(T, *cur.shape)
            else:  # every frame of every step at once
                cur = self.pool(conv(h.reshape(T * B, *h.shape[2:])))
                cur = cur.reshape(T, B, *cur.shape[1:])
            spk, _ = lif(cur)
            spikes.append(spk)
            h = self.dropout(spk)  # the next layer's input
        out, mem = self.lifs[-1](self.fc(h.reshape(T, B, -1)))
        spikes.append(out)
        return spikes, mem

    def _forward_snntorch(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        leaky = self.neuron.kind == "leaky"
        states = [(lif.reset_mem(),) if leaky else lif.reset_mem() for lif in self.lifs]
        spk_rec: list[list[torch.Tensor]] = [[] for _ in self.lifs]
        mem_rec = []
        masks = StepMasks(self.dropout, x.shape[0], len(self.convs))
        for t in range(x.shape[0]):
            h = x[t]
            for i, lif in enumerate(self.lifs):
                if i < len(self.convs):
                    cur = self.pool(self.convs[i](h))
                else:
                    cur = self.fc(h.flatten(1))
                out = lif(cur, *states[i])
                h, states[i] = out[0], tuple(out[1:])
                spk_rec[i].append(h)
                h = masks.apply(i, t, h)
            mem_rec.append(states[-1][-1])
        return [torch.stack(s) for s in spk_rec], torch.stack(mem_rec)
