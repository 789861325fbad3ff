"""The model contract: what snnbench gives a model and what it expects back.

A model is any ``torch.nn.Module`` named by ``_target_`` in a ``model`` YAML (a class or a
factory function); :func:`build_model` builds it with :func:`hydra.utils.instantiate`.

**Arguments.** Every key of the ``model`` node except the harness's own
(``_target_``, ``name``, ``num_steps``, ``event_input``, ``lr``) is passed as a keyword
argument. In addition the harness passes each of these that the constructor names in its
signature (and that the YAML does not set):

* ``input_shape``: ``tuple[int, ...]``, one sample's shape from the dataset, e.g. ``(1, 28, 28)``;
* ``num_classes``: ``int``, from the dataset;
* ``num_steps``: ``int | None``, T (``model.num_steps``);
* ``neuron``: :class:`Neuron`, the ``neuron`` group (LIF parameters; builds snnTorch neurons).

**Input.** ``model.num_steps: null``: a non-spiking model, fed float images
``[B, *input_shape]`` in [0, 1]. ``model.num_steps: T``: a spiking model, fed the
``encoding`` group's code time-first, ``[T, B, *input_shape]`` (spikes in {0, 1}, or the
analog image repeated over T under ``encoding=direct``: then the tensor has stride 0 on
T, and a model may apply its first layer once and broadcast it).

**Output.** The logits ``[B, num_classes]`` (trained with cross-entropy), or an object with
``.logits`` and, optionally, ``.spikes``: one ``[T, B, ...]`` tensor per spiking layer
(output layer last; the spiking metrics and the raster use it) and ``.mem_out``: the output
membrane ``[T, B, num_classes]`` (the accuracy-vs-time curve uses it with the model's
``readout`` attribute), as :class:`snnbench.networks.mlp.SNNOutput`.

**Metrics.** Synaptic operations are counted by hooks on every ``nn.Linear`` and
``nn.Conv2d``; firing rates by hooks on snnTorch neurons (``snn.Leaky``, ``snn.Synaptic``
...) and snnbench's :class:`snnbench.networks.layers.LIF` — unless the output carries ``.spikes``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from snnbench.config import MODEL_HARNESS_KEYS, ConfigError
from snnbench.maths.neurons import DEFAULT_SLOPE, LIFParams
from snnbench.targets import _locate, _one_line

#: Models of records written before models were objects (no ``_target_``), by name.
LEGACY_TARGETS = {
    "ann": "snnbench.models.ann_mlp",
    "single_step": "snnbench.models.spiking_mlp",
    "temporal": "snnbench.models.spiking_mlp",
}
#: What :func:`build_model` may pass besides the YAML's keys (when the signature names it).
INJECTED = ("input_shape", "num_classes", "num_steps", "neuron")


@dataclass(frozen=True)
class Neuron:
    """The ``neuron`` group: kind (``leaky`` | ``synaptic``), LIF parameters, learnable beta."""

    kind: str = "leaky"
    params: LIFParams = LIFParams()
    learn_beta: bool = False

    @classmethod
    def from_cfg(cls, neuron: DictConfig) -> Neuron:
        slope = neuron.get("slope")
        params = LIFParams(
            beta=float(neuron.beta),
            alpha=float(neuron.get("alpha", 0.9)),
            threshold=float(neuron.threshold),
            reset=str(neuron.reset),
            surrogate=str(neuron.surrogate),
            slope=float(DEFAULT_SLOPE[neuron.surrogate] if slope is None else slope),
        )
        return cls(str(neuron.name), params, bool(neuron.get("learn_beta", False)))

    def snntorch(self, **kwargs: Any) -> nn.Module:
        """An ``snn.Leaky`` / ``snn.Synaptic`` with these parameters (``kwargs`` added, e.g.
        ``init_hidden=True``); left out of snnTorch's class-level list of neurons."""
        import snntorch as snn
        from snntorch import surrogate as sg

        p = self.params
        slope = p.surrogate_slope
        grad = (
            sg.atan(alpha=slope)
            if p.surrogate == "atan"
            else {"fast_sigmoid": sg.fast_sigmoid, "sigmoid": sg.sigmoid}[p.surrogate](slope=slope)
        )
        kw = dict(
            beta=p.beta,
            threshold=p.threshold,
            learn_beta=self.learn_beta,
            spike_grad=grad,
            reset_mechanism=p.reset,
        )
        kw.update(kwargs)
        if self.kind == "synaptic":
            lif = snn.Synaptic(alpha=p.alpha, **kw)
        else:
            lif = snn.Leaky(**kw)
        registry = snn.SpikingNeuron.instances
        registry[:] = [n for n in registry if n is not lif]
        return lif


def model_target(cfg: DictConfig) -> str:
    """``model._target_``, or for an old record's config the built-in model of its name."""
    target = cfg.model.get("_target_")
    return str(target) if target else LEGACY_TARGETS.get(str(cfg.model.get("name")), "")


def build_model(
    cfg: DictConfig,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Instantiate ``cfg.model`` (weights from the current torch RNG).

    ``input_shape`` / ``num_classes`` default to the dataset's (no data is loaded). Raises
    :class:`ConfigError` (one line naming ``model._target_`` and the reason) when the target
    cannot be imported, refuses its arguments, fails, or is not an ``nn.Module``.
    """
    from hydra.utils import instantiate

    if input_shape is None or num_classes is None:
        from snnbench.dataio.datasets import dataset_shape

        shape, classes = dataset_shape(cfg.dataset)
        input_shape = shape if input_shape is None else input_shape
        num_classes = classes if num_classes is None else num_classes
    target = model_target(cfg)
    key = f"model._target_={target!r}"
    node = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(node, dict)
    kwargs = {k: v for k, v in node.items() if k not in MODEL_HARNESS_KEYS}
    try:
        factory = _locate(target)
    except Exception as exc:
        raise ConfigError(f"{key} cannot be imported ({_one_line(exc)})") from None
    if not callable(factory):
        raise ConfigError(f"{key} is not a class or function")
    offered = {
        "input_shape": tuple(int(d) for d in input_shape),
        "num_classes": int(num_classes),
        "num_steps": cfg.model.get("num_steps"),
        "neuron": Neuron.from_cfg(cfg.neuron) if "neuron" in cfg else None,
    }
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    injected = {k: v for k, v in offered.items() if k in params and k not in kwargs}
    try:  # the YAML's arguments through Hydra (nested _target_s too), ours passed as they are
        partial = instantiate({"_target_": target, **kwargs}, _partial_=True, _convert_="all")
        model = partial(**injected)
    except Exception as exc:
        raise ConfigError(f"{key} could not be built ({_one_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{key} built a {type(model).__name__}, not a torch.nn.Module")
    return model
