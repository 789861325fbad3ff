"""Dropout of hidden activations and spikes, the same knob for every built-in model.

``model.dropout`` (p, default 0 = off) zeroes each hidden unit's output with probability p
while training and scales the kept ones by ``1 / (1 - p)``; evaluation sees the whole
network, unscaled. For models with time (``[T, B, ...]``, time first) ``model.dropout_mask``
says how the mask varies over the T steps: ``sample`` draws one mask ``[1, B, ...]`` per
sample and broadcasts it over T (the same units are silenced for the whole presentation),
``step`` draws a fresh mask ``[T, B, ...]`` at every step.

The masks come from a generator the trainer seeds per training batch from
``(seed, epoch, step)`` (:func:`batch_generator`), so a run is reproducible from its seed and
a resumed run (restarted at an epoch boundary) draws what an unbroken one would. Outside the
trainer (no generator set) the masks come from torch's global RNG, as ``nn.Dropout``'s do.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: ``model.dropout_mask`` choices.
DROPOUT_MASKS = ("sample", "step")
#: Added to the seed sequence so the dropout draws are a stream of their own, independent of
#: the augmentation's draws for the same batch.
_STREAM = 0x64726F70  # "drop"


def check(p: float, mask: str = "sample") -> None:
    """Raise ``ValueError`` naming the key unless ``0 <= p < 1`` and ``mask`` is a choice."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"model.dropout={p!r} is not allowed; it must be in [0, 1)")
    if mask not in DROPOUT_MASKS:
        raise ValueError(
            f"model.dropout_mask={mask!r} is not allowed; choose one of {', '.join(DROPOUT_MASKS)}"
        )


class Dropout(nn.Module):
    """Training-time dropout of a hidden layer's output (no parameters, no buffers: a model's
    ``state_dict`` is the same whatever p is).

    ``time_first=True``: inputs are ``[T, B, ...]`` and ``mask`` (``sample`` | ``step``)
    chooses one mask per sample shared by the T steps, or one per step; ``time_first=False``:
    inputs are ``[B, ...]``, one mask element per value.
    """

    def __init__(self, p: float = 0.0, mask: str = "sample", time_first: bool = True):
        super().__init__()
        check(p, mask)
        self.p, self.mask_kind, self.time_first = float(p), mask, time_first
        #: Set by the trainer before each training batch (:func:`set_generator`); None: the
        #: global RNG. On the device of the activations.
        self.generator: torch.Generator | None = None

    @property
    def active(self) -> bool:
        """Whether a forward pass in the current mode drops anything."""
        return self.training and self.p > 0

    def draw(self, shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
        """The scaled keep-mask for activations of ``shape`` (``[T, B, ...]`` when
        ``time_first``): values ``1 / (1 - p)`` (kept) or 0, float32, shaped
        ``[1, B, ...]`` (``sample``) or ``shape`` (``step``, or no time axis)."""
        if self.time_first and self.mask_kind == "sample":
            shape = (1, *shape[1:])
        u = torch.rand(shape, generator=self.generator, device=device)
        return (u >= self.p).to(torch.float32).mul_(1.0 / (1.0 - self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with units dropped and the rest scaled (training, p > 0), else ``x`` itself."""
        if not self.active:
            return x
        return x * self.draw(x.shape, x.device).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, mask={self.mask_kind}" if self.time_first else f"p={self.p}"


def has_dropout(model: nn.Module) -> bool:
    """Whether any :class:`Dropout` of ``model`` drops something (p > 0)."""
    return any(isinstance(m, Dropout) and m.p > 0 for m in model.modules())


def batch_generator(seed: int, epoch: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of one training batch's dropout masks, on ``device``: a function of
    (seed, epoch, step) only."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(step), _STREAM]).generate_state(1)
    return torch.Generator(device=device).manual_seed(int(state[0]))


def set_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every :class:`Dropout` of ``model`` draw its masks from ``generator`` (in the
    order the forward pass reaches them); None: from the global RNG."""
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator


class StepMasks:
    """The masks of a step loop (steps outer, layers inner) equal to those the time-first
    forward pass draws from the same generator: each hidden layer's ``[T or 1, B, ...]`` mask
    is drawn at step 0, in layer order, and indexed by step after that."""

    def __init__(self, dropout: Dropout, steps: int, hidden_layers: int):
        self.dropout, self.steps, self.hidden_layers = dropout, steps, hidden_layers
        self.masks: dict[int, torch.Tensor] = {}

    def apply(self, layer: int, t: int, h: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s output ``h`` ``[B, ...]`` at step ``t``, dropped (a hidden layer
        while training with p > 0) or as it is."""
        if layer >= self.hidden_layers or not self.dropout.active:
            return h
        if t == 0:
            self.masks[layer] = self.dropout.draw((self.steps, *h.shape), h.device)
        mask = self.masks[layer]
        return h * mask[t if mask.shape[0] > 1 else 0].to(h.dtype)
