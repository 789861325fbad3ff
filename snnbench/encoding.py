"""Encoders: uint8 images ``[B, H, W]`` -> time-first input ``[T, B, H*W]`` (float32).

All encoders run on the images' device. ``rate`` is Bernoulli with
p = gain * pixel / 255 at resolution 2**-15; ``latency`` and ``delta`` follow ``snntorch.spikegen``;
``direct`` feeds the analog image (pixel / 255) at every step. :func:`encode_events` gives the
spike encodings' output as :class:`~snnbench.events.SpikeEvents` (the same spikes, CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from snnbench import events
from snnbench.events import SPIKE_ENCODINGS, SpikeEvents


@dataclass(frozen=True)
class EncodingParams:
    """Plain values of the ``encoding`` config group (see conf/encoding/*.yaml)."""

    name: str = "rate"
    gain: float = 1.0
    tau: float = 5.0
    threshold: float = 0.01
    linear: bool = True
    normalize: bool = True


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W]`` -> float32 ``[B, H*W]`` in [0, 1]."""
    return images.reshape(images.shape[0], -1).to(torch.float32).div_(255.0)


#: Resolution of :func:`rate`'s spike probabilities: p is rounded to a multiple of 2**-15.
RATE_BITS = 15


def rate_probability(images: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """The exact P(spike) that :func:`rate` draws with: ``round(2**15 * p) / 2**15`` for
    ``p = clamp(gain * pixel / 255, 0, 1)``; shape ``[B, H*W]``, float64.

    It is within 2**-16 of ``gain * pixel / 255`` and exact at p = 0 and p = 1.
    """
    p = (to_unit(images) * gain).clamp_(0, 1).double()
    return torch.round(p * 2**RATE_BITS) / 2**RATE_BITS


def rate_draws(
    images: torch.Tensor, num_steps: int, gain: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random integers and thresholds of :func:`rate`: (r int16 ``[T, B, H*W]``, uniform
    in [0, 32767]; k1 int16 ``[B, H*W]`` = k - 1); a spike is ``r <= k1``."""
    flat = images.reshape(images.shape[0], -1)
    shape = (num_steps, *flat.shape)
    n = num_steps * flat.numel()
    # k - 1 in [-1, 32767] fits int16: "r <= k - 1" is never true for p = 0, always for p = 1
    p = (to_unit(flat) * gain).clamp_(0, 1)
    k1 = torch.round(p * 2**RATE_BITS).sub_(1).to(torch.int16)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=flat.device)
    words.random_(-(2**63), None, generator=generator)  # full 64-bit range, uniform
    words.bitwise_and_(0x7FFF7FFF7FFF7FFF)  # four uniform 15-bit lanes per word
    return words.view(torch.int16)[:n].view(shape), k1


def rate(
    images: torch.Tensor,
    num_steps: int,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bernoulli rate code: ``out[t, b, i] ~ Bernoulli(gain * images[b, i] / 255)``.

    Resolution 2**-15: each draw compares a uniform 15-bit integer ``r`` in [0, 32767]
    with ``k = round(32768 * p)`` (``r <= k - 1``), so P(spike) = k / 32768 exactly — within
    2**-16 of ``gain * pixel / 255``, exactly 0 for black and 1 for white pixels
    (:func:`rate_probability`). The random integers are 64-bit words from ``generator``
    (on the images' device), each split into four 15-bit lanes: one RNG call per four spikes.
    Shape ``[T, B, H*W]`` float32, values {0, 1}; runs on the images' device.
    """
    r, k1 = rate_draws(images, num_steps, gain, generator)
    out = torch.empty(r.shape, dtype=torch.float32, device=r.device)
    return torch.le(r, k1, out=out)


def rate_events(
    images: torch.Tensor,
    num_steps: int,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> SpikeEvents:
    """The spikes of :func:`rate` (same draws from the same generator state) as events:
    per step and sample the indices of the inputs that spiked, without the dense tensor.

    CPU only; needs numba (:func:`snnbench.events.available`).
    """
    r, k1 = rate_draws(images, num_steps, gain, generator)
    return events.rate_events(r, k1)


def direct(images: torch.Tensor, num_steps: int) -> torch.Tensor:
    """The analog image as a constant input current, ``[T, B, H*W]`` (a broadcast view)."""
    x = to_unit(images)
    return x.unsqueeze(0).expand(num_steps, *x.shape)


def latency(
    images: torch.Tensor,
    num_steps: int,
    tau: float = 5.0,
    threshold: float = 0.01,
    linear: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """One spike per pixel at a time decreasing with intensity (``spikegen.latency``, clip=True).

    Pixels below ``threshold`` never spike. Shape ``[T, B, H*W]``. With ``normalize=False``
    the spike times must fit in T (:func:`latency_last_step`; the config check refuses T
    too small before anything runs).
    """
    from snntorch import spikegen

    x = to_unit(images)
    if num_steps == 1:  # spikegen: every spike at t=0 (normalised), pixels >= threshold
        return (x >= threshold).to(torch.float32).unsqueeze(0)
    return spikegen.latency(
        x,
        num_steps=num_steps,
        tau=tau,
        threshold=threshold,
        clip=True,
        normalize=normalize,
        linear=linear,
    ).to(torch.float32)


def latency_last_step(tau: float, threshold: float, linear: bool) -> int:
    """The step of the latest spike of an un-normalised latency code: that of a black pixel
    (spike times fall with intensity), computed as ``snntorch.spikegen`` does, in float32."""
    from snntorch import spikegen

    black = torch.zeros(1)
    t, _ = spikegen.latency_code(black, num_steps=1, threshold=threshold, tau=tau, linear=linear)
    return int(torch.round(t.max()).item())


def delta(images: torch.Tensor, num_steps: int, threshold: float = 0.1) -> torch.Tensor:
    """``spikegen.delta`` of the static image held for T steps: a spike at t=0 for each pixel
    whose value rises above ``threshold`` from the zero before it, silence after.

    Shape ``[T, B, H*W]``.
    """
    x = to_unit(images)
    out = torch.zeros(num_steps, *x.shape, device=x.device)
    out[0] = (x >= threshold).to(torch.float32)  # snntorch: data - prev >= threshold
    return out


def encode(
    images: torch.Tensor,
    num_steps: int,
    params: EncodingParams,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dispatch on ``params.name``; uint8 ``[B, H, W]`` -> float32 ``[T, B, H*W]``."""
    if params.name == "rate":
        return rate(images, num_steps, params.gain, generator)
    if params.name == "direct":
        return direct(images, num_steps)
    if params.name == "latency":
        return latency(
            images, num_steps, params.tau, params.threshold, params.linear, params.normalize
        )
    if params.name == "delta":
        return delta(images, num_steps, params.threshold)
    raise ValueError(f"encoding.name={params.name!r} is not known")


def encode_events(
    images: torch.Tensor,
    num_steps: int,
    params: EncodingParams,
    generator: torch.Generator | None = None,
) -> SpikeEvents:
    """:func:`encode` as events (same spikes, same generator draws); CPU, spike encodings only.

    rate draws the events directly; latency and delta are converted from their dense output.
    """
    if params.name not in SPIKE_ENCODINGS:
        raise ValueError(f"encoding.name={params.name!r} has no event form (analog input)")
    if params.name == "rate":
        return rate_events(images, num_steps, params.gain, generator)
    return events.from_dense(encode(images, num_steps, params, generator))
