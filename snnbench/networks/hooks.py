"""Forward hooks that count what any model does, whatever its code: synaptic operations of
every ``nn.Linear`` and ``nn.Conv2d`` (NeuroBench's rule), and the spikes of every spiking
layer (snnTorch neurons such as ``snn.Leaky``/``snn.Synaptic``, and
:class:`snnbench.networks.layers.LIF`).

Each call of a hooked layer is one or more applications: a Linear fed ``[..., in]`` applies
once per leading index, a Conv2d fed ``[..., C, H, W]`` once per image. So the counts are per
time step whether a model steps through T (snnTorch's loop) or applies a layer once over all
``T*B`` frames. A model that skips work says so, and is counted as if it had not:

* a layer applied once to an input that is the same at every step (``encoding=direct``)
  runs inside ``with repeated(T):``, which counts that call T times;
* a Linear fed spike events instead of being called (:func:`snnbench.maths.events.event_linear`)
  is reported with :func:`count_events`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from snnbench.maths.synops import conv2d_ops
from snnbench.networks.layers import LIF

if TYPE_CHECKING:
    from snnbench.maths.events import SpikeEvents
    from snnbench.maths.synops import LayerOps


def is_spiking_layer(module: nn.Module) -> bool:
    """snnTorch neurons (``snn.SpikingNeuron`` subclasses) and snnbench's :class:`LIF`."""
    if isinstance(module, LIF):
        return True
    try:
        import snntorch as snn
    except ImportError:  # pragma: no cover - snntorch is a dependency
        return False
    return isinstance(module, snn.SpikingNeuron)


_REPEAT = [1]  # how many steps the layer calls made now stand for (see repeated)
_ACTIVE: list[Recorder] = []  # recorders whose hooks are on (see count_events)


@contextmanager
def repeated(times: int) -> Iterator[None]:
    """Count the hooked layer calls made inside as ``times`` calls: a model that applies a
    layer once to an input repeated over T steps (stride 0) wraps that call in it."""
    _REPEAT.append(int(times))
    try:
        yield
    finally:
        _REPEAT.pop()


def count_events(module: nn.Linear, events: SpikeEvents) -> None:
    """Report a Linear applied to spike events without being called (its hooks did not
    run): every active :class:`Recorder` that hooks ``module`` counts it, step by step."""
    from snnbench.maths.synops import input_ops

    for rec in _ACTIVE:
        for layer in rec.synaptic:
            if layer.module is module:
                T, B, _ = events.shape
                ops = input_ops(events, module.weight.detach())
                layer.ops = ops if layer.ops is None else layer.ops + ops
                layer.outputs += T * B * module.out_features


@dataclass
class SynapticLayer:
    """Counts of one hooked Linear/Conv2d over a pass (totals, not per sample)."""

    name: str
    module: nn.Module
    ops: LayerOps | None = None
    outputs: int = 0  # output values (neuron activations, summed over applications)


@dataclass
class SpikingLayer:
    """Spike counts of one hooked spiking layer over a pass (totals)."""

    name: str
    spikes: float = 0.0
    zeros: int = 0
    values: int = 0


@dataclass
class Recorder:
    """Hooks on ``model``'s synaptic and spiking layers, in module order; ``remove()`` when
    done. ``check_spikes=False``: count every synaptic operation as a MAC (a non-spiking
    model) and skip the {-1, 0, 1} test."""

    model: nn.Module
    check_spikes: bool = True
    synaptic: list[SynapticLayer] = field(default_factory=list)
    spiking: list[SpikingLayer] = field(default_factory=list)
    _handles: list[Any] = field(default_factory=list)
    _masks: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                layer = SynapticLayer(name, module)
                self.synaptic.append(layer)
                self._handles.append(module.register_forward_hook(self._ops_hook(layer)))
            elif is_spiking_layer(module):
                rec = SpikingLayer(name)
                self.spiking.append(rec)
                self._handles.append(module.register_forward_hook(self._spike_hook(rec)))
        _ACTIVE.append(self)

    def _ops_hook(self, layer: SynapticLayer):
        from snnbench.maths.synops import linear_ops

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            x = args[0].detach()
            prev = layer.ops
            # once a layer has had a non-spike input it does MACs: skip the test after that
            check = self.check_spikes and (prev is None or prev.spike_input)
            if isinstance(module, nn.Conv2d):
                key = id(module)
                if key not in self._masks:
                    self._masks[key] = (module.weight.detach() != 0).to(torch.float32)
                ops = conv2d_ops(x, module, check, self._masks[key])
            else:
                ops = linear_ops(x, module.weight.detach(), check)
            times = _REPEAT[-1]
            if times != 1:
                ops = ops.times(times)
            layer.ops = ops if prev is None else prev + ops
            layer.outputs += output.numel() * times

        return hook

    def _spike_hook(self, rec: SpikingLayer):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            spk = output[0] if isinstance(output, (tuple, list)) else output
            spk = spk.detach()
            times = _REPEAT[-1]
            rec.spikes += float(spk.sum(dtype=torch.float64)) * times
            rec.zeros += (spk.numel() - int(torch.count_nonzero(spk))) * times
            rec.values += spk.numel() * times

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)


__all__ = ["Recorder", "conv2d_ops", "count_events", "is_spiking_layer", "repeated"]
