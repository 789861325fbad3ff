"""Encoders: uint8 images ``[B, H, W]`` -> time-first input ``[T, B, H*W]`` (float32).

All encoders run on the images' device. ``rate`` is Bernoulli with p = gain * pixel / 255
at resolution 2**-15, drawn from a counter-based generator; ``latency`` and ``delta``
follow ``snntorch.spikegen``; ``direct`` feeds the analog image (pixel / 255) at every step.
:func:`encode_events` gives the spike encodings' output as
:class:`~snnbench.maths.events.SpikeEvents` (the same spikes, CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from snnbench.maths import events
from snnbench.maths.events import SPIKE_ENCODINGS, SpikeEvents


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


#: Name of the rate sampler, saved with checkpoints (a resume with another sampler says so).
RATE_SAMPLER = "splitmix64-counter-lanes15"

_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _int64(c: int) -> int:
    """An unsigned 64-bit constant as the signed value of the same bits (torch int64)."""
    return c - 2**64 if c >= 2**63 else c


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def rate_thresholds(images: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """k - 1 per input, int16 ``[B, H*W]``: a spike is a uniform 15-bit lane <= k - 1, so
    P(spike) = k / 32768 with ``k = round(32768 * clamp(gain * pixel / 255, 0, 1))``
    (-1: never, p = 0; 32767: always, p = 1)."""
    flat = images.reshape(images.shape[0], -1)
    p = (to_unit(flat) * gain).clamp_(0, 1)
    return torch.round(p * 2**RATE_BITS).sub_(1).to(torch.int16)


def rate_key(generator: torch.Generator | None, device: torch.device | str = "cpu") -> int:
    """One uniform 64-bit key per batch from ``generator`` (the run's encoding generator,
    checkpointed): the rate sampler's stream for this batch, as a Python int."""
    word = torch.empty(1, dtype=torch.int64, device=device)
    word.random_(-(2**63), None, generator=generator)  # full 64-bit range, uniform
    return int(word.item())


def rate_torch(key: int, k1: torch.Tensor, num_steps: int) -> torch.Tensor:
    """The rate sampler in torch ops on ``k1``'s device: float32 ``[T, B, N]``.

    SplitMix64 (a counter-based generator) at position ``n = (b*N + i)*G + g + 1`` of the
    stream keyed by ``key``, for sample b, input i, group g of four steps (G = ceil(T/4));
    its 64 bits give four uniform 15-bit lanes (bits 16l..16l+14) for steps ``4g + l``; a
    spike is ``lane <= k1[b, i]``. Bit-identical to the CPU kernels of
    :mod:`snnbench.maths.events` (:func:`~snnbench.maths.events.rate_dense`, ``rate_events``).
    """
    B, N = k1.shape
    G = (num_steps + 3) // 4
    dev = k1.device
    n = torch.arange(B * N, dtype=torch.int64, device=dev).mul_(G).view(1, B, N)
    n = n + torch.arange(1, G + 1, dtype=torch.int64, device=dev).view(G, 1, 1)
    z = n.mul_(_int64(_GAMMA)).add_(_int64(key % 2**64))
    z = (z ^ _srl(z, 30)) * _int64(_MIX1)
    z = (z ^ _srl(z, 27)) * _int64(_MIX2)
    z = z ^ _srl(z, 31)
    lanes = torch.stack([(z >> (16 * lane)) & 0x7FFF for lane in range(4)], 1)  # [G,4,B,N]
    spikes = lanes.reshape(4 * G, B, N)[:num_steps] <= k1.to(torch.int64)
    return spikes.to(torch.float32)


def rate(
    images: torch.Tensor,
    num_steps: int,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bernoulli rate code: ``out[t, b, i] ~ Bernoulli(gain * images[b, i] / 255)``,
    independent over t, b, i.

    Resolution 2**-15: each draw compares a uniform 15-bit integer with ``k - 1``,
    ``k = round(32768 * p)``, so P(spike) = k / 32768 exactly — within 2**-16 of
    ``gain * pixel / 255``, exactly 0 for black and 1 for white pixels
    (:func:`rate_probability`). The integers come from a counter-based generator
    (:func:`rate_torch`) keyed by one 64-bit word drawn from ``generator`` per batch:
    reproducible from the seed, and the same spikes as :func:`rate_events`.
    Shape ``[T, B, H*W]`` float32, values {0, 1}; runs on the images' device (CPU: a
    compiled kernel when numba is present).
    """
    key = rate_key(generator, images.device)
    k1 = rate_thresholds(images, gain)
    if images.device.type == "cpu" and events.available():
        return events.rate_dense(key, k1, num_steps)
    return rate_torch(key, k1, num_steps)


def rate_events(
    images: torch.Tensor,
    num_steps: int,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> SpikeEvents:
    """The spikes of :func:`rate` (same key from the same generator state) as events: per
    step and sample the indices of the inputs that spiked, without the dense tensor.

    Only inputs with 0 < p draw (black pixels are skipped); four steps per draw. CPU only;
    needs numba (:func:`snnbench.maths.events.available`).
    """
    key = rate_key(generator, images.device)
    return events.rate_events(key, rate_thresholds(images, gain), num_steps)


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
