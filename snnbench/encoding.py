"""Encoders: uint8 images ``[B, H, W]`` -> time-first input ``[T, B, H*W]`` (float32).

All encoders run on the images' device. ``rate`` is exact Bernoulli with
p = gain * pixel / 255; ``latency`` and ``delta`` follow ``snntorch.spikegen``;
``direct`` feeds the analog image (pixel / 255) at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def rate(
    images: torch.Tensor,
    num_steps: int,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bernoulli rate code: ``out[t, b, i] ~ Bernoulli(gain * images[b, i] / 255)``.

    For gain = 1 the draw compares uniform random bytes r in {0..254} against the pixel
    (P(r < pixel) = pixel/255 exactly, no float rounding); otherwise uniform floats
    against gain*pixel/255 (float32 resolution). Shape ``[T, B, H*W]``, values {0, 1}.
    """
    flat = images.reshape(images.shape[0], -1)
    shape = (num_steps, *flat.shape)
    if gain == 1.0 and flat.dtype == torch.uint8:
        r = torch.randint(0, 255, shape, generator=generator, device=flat.device, dtype=torch.uint8)
        return (r < flat).to(torch.float32)
    p = to_unit(flat) * gain
    u = torch.rand(shape, generator=generator, device=flat.device)
    return (u < p).to(torch.float32)


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

    Pixels at or below ``threshold`` never spike. Shape ``[T, B, H*W]``.
    """
    from snntorch import spikegen

    x = to_unit(images)
    if num_steps == 1:
        return (x > threshold).to(torch.float32).unsqueeze(0)
    return spikegen.latency(
        x,
        num_steps=num_steps,
        tau=tau,
        threshold=threshold,
        clip=True,
        normalize=normalize,
        linear=linear,
    ).to(torch.float32)


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
