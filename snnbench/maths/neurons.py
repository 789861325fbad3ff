"""Pure LIF maths: surrogate spike functions and one-step neuron updates.

These functions reproduce snnTorch 1.0's ``Leaky`` and ``Synaptic`` exactly one step
at a time: the readable reference of the maths,
tested against snnTorch. :mod:`snnbench.maths.engine` implements the same maths fused over T (one
autograd node per layer) and is tested against snnTorch and these.
Every tensor here is one time step, shape ``[B, N]``; membrane potentials
and thresholds are in the same (arbitrary) units as the layer's input current.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

#: snnTorch's default sharpness per surrogate (atan's ``alpha``, the others' ``slope``).
DEFAULT_SLOPE = {"atan": 2.0, "fast_sigmoid": 25.0, "sigmoid": 25.0}


@dataclass(frozen=True)
class LIFParams:
    """Neuron parameters shared by every neuron of a layer.

    beta: membrane decay per step (clamped to [0, 1] as snnTorch does).
    alpha: synaptic-current decay per step (Synaptic neurons only).
    threshold: firing threshold. reset: "subtract" | "zero" | "none".
    surrogate: "atan" | "fast_sigmoid" | "sigmoid"; slope: its sharpness (None = default).
    """

    beta: float = 0.9
    alpha: float = 0.9
    threshold: float = 1.0
    reset: str = "subtract"
    surrogate: str = "atan"
    slope: float | None = None

    @property
    def surrogate_slope(self) -> float:
        return DEFAULT_SLOPE[self.surrogate] if self.slope is None else float(self.slope)


def surrogate_grad(u: torch.Tensor, surrogate: str, slope: float) -> torch.Tensor:
    """dS/dU of the surrogate at ``u = mem - threshold`` (same shape as ``u``)."""
    if surrogate == "atan":
        return (slope / 2) / (1 + (math.pi / 2 * slope * u) ** 2)
    if surrogate == "fast_sigmoid":
        return 1.0 / (slope * u.abs() + 1.0) ** 2
    if surrogate == "sigmoid":  # slope*e/(e+1)^2 with e = exp(-slope*u), without overflow
        s = torch.sigmoid(slope * u)
        return slope * s * (1 - s)
    raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {', '.join(DEFAULT_SLOPE)}")


class _Spike(torch.autograd.Function):
    """Heaviside forward (1 where u > 0), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, surrogate: str, slope: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.surrogate, ctx.slope = surrogate, slope
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (u,) = ctx.saved_tensors
        return grad_out * surrogate_grad(u, ctx.surrogate, ctx.slope), None, None


def spike(u: torch.Tensor, surrogate: str = "atan", slope: float | None = None) -> torch.Tensor:
    """Spikes ``H(u)`` (strictly positive) with a surrogate gradient; ``u = mem - threshold``."""
    return _Spike.apply(u, surrogate, DEFAULT_SLOPE[surrogate] if slope is None else slope)


class LeakyState(NamedTuple):
    mem: torch.Tensor  # [B, N] membrane potential after the previous step


class SynapticState(NamedTuple):
    syn: torch.Tensor  # [B, N] synaptic current after the previous step
    mem: torch.Tensor  # [B, N] membrane potential after the previous step


def leaky_step(
    current: torch.Tensor, state: LeakyState, p: LIFParams, beta: torch.Tensor | float | None = None
) -> tuple[torch.Tensor, LeakyState]:
    """One ``snn.Leaky`` step: ``[B, N]`` input current -> (spikes ``[B, N]``, new state).

    reset = H(mem_prev - thr) (no gradient); then
    subtract: mem = b*mem_prev + I - reset*thr; zero: mem = b*(1-reset)*mem_prev + I;
    none: mem = b*mem_prev + I; spikes = H(mem - thr) with the surrogate gradient.
    ``beta`` (a tensor when learnable) overrides ``p.beta``; it is clamped to [0, 1].
    """
    b = torch.as_tensor(p.beta if beta is None else beta).clamp(0, 1)
    mem_prev = state.mem
    reset = (mem_prev - p.threshold > 0).to(current.dtype).detach()
    if p.reset == "subtract":
        mem = b * mem_prev + current - reset * p.threshold
    elif p.reset == "zero":
        mem = b * ((1 - reset) * mem_prev) + current
    else:
        mem = b * mem_prev + current
    spk = spike(mem - p.threshold, p.surrogate, p.surrogate_slope)
    return spk, LeakyState(mem)


def synaptic_step(
    current: torch.Tensor,
    state: SynapticState,
    p: LIFParams,
    beta: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, SynapticState]:
    """One ``snn.Synaptic`` step: ``[B, N]`` input current -> (spikes, new state).

    syn = a*syn_prev + I; reset = H(mem_prev - thr) (no gradient);
    subtract: mem = b*mem_prev + syn - reset*thr; zero: mem = (b*mem_prev + syn)*(1 - reset);
    none: mem = b*mem_prev + syn; spikes = H(mem - thr).
    """
    b = torch.as_tensor(p.beta if beta is None else beta).clamp(0, 1)
    a = min(max(p.alpha, 0.0), 1.0)
    reset = (state.mem - p.threshold > 0).to(current.dtype).detach()
    syn = a * state.syn + current
    if p.reset == "subtract":
        mem = b * state.mem + syn - reset * p.threshold
    elif p.reset == "zero":
        mem = (b * state.mem + syn) * (1 - reset)
    else:
        mem = b * state.mem + syn
    spk = spike(mem - p.threshold, p.surrogate, p.surrogate_slope)
    return spk, SynapticState(syn, mem)
