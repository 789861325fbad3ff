"""Encoders: shapes, exact Bernoulli statistics, and snnTorch's latency/delta semantics."""

from __future__ import annotations

import pytest
import torch
from snntorch import spikegen

from snnbench import encoding


def test_rate_is_bernoulli_pixel_over_255():
    levels = torch.tensor([0, 1, 51, 128, 254, 255], dtype=torch.uint8)
    images = levels.repeat(2000).reshape(2000, 1, 6)
    spikes = encoding.rate(images, 50, generator=torch.Generator().manual_seed(0))
    assert spikes.shape == (50, 2000, 6) and spikes.dtype == torch.float32
    freq = spikes.mean((0, 1))
    p = levels.double() / 255
    n = 50 * 2000
    # within 5 standard errors of p/255 for every level; 0 and 255 exact
    assert torch.all((freq.double() - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-12)
    assert freq[0] == 0 and freq[-1] == 1


def test_rate_with_gain_and_generator_repeatability():
    images = torch.full((1000, 4), 200, dtype=torch.uint8)
    s = encoding.rate(images, 20, gain=0.5, generator=torch.Generator().manual_seed(1))
    assert s.mean().item() == pytest.approx(0.5 * 200 / 255, abs=0.01)
    a = encoding.rate(images, 5, generator=torch.Generator().manual_seed(7))
    b = encoding.rate(images, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_direct_repeats_analog_image():
    images = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    x = encoding.direct(images, 3)
    assert x.shape == (3, 1, 4)
    assert torch.allclose(x[2, 0], torch.tensor([0.0, 1.0, 0.2, 0.4]))


def test_latency_matches_snntorch():
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    ours = encoding.latency(images, 25, tau=5.0, threshold=0.01, linear=True, normalize=True)
    ref = spikegen.latency(
        images.reshape(8, -1).float() / 255,
        num_steps=25,
        tau=5.0,
        threshold=0.01,
        clip=True,
        normalize=True,
        linear=True,
    )
    assert torch.equal(ours, ref)
    assert ours.sum(0).max() <= 1  # at most one spike per pixel


def test_delta_matches_snntorch_on_held_image():
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    x = images.reshape(4, -1).float() / 255
    ref = spikegen.delta(x.unsqueeze(0).repeat(6, 1, 1), threshold=0.1)
    assert torch.equal(encoding.delta(images, 6, threshold=0.1), ref)


def _all_levels() -> torch.Tensor:
    return torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)


@pytest.mark.parametrize("threshold", [0.01, float(torch.tensor(128.0) / 255)])
def test_latency_single_step_matches_snntorch(threshold):
    """T=1 fires at t=0 exactly the pixels snnTorch fires (>= threshold, equality included)."""
    images = _all_levels()
    ref = spikegen.latency(
        images.reshape(1, -1).float() / 255,
        num_steps=1,
        threshold=threshold,
        tau=5.0,
        clip=True,
        normalize=True,
        linear=True,
    )
    ours = encoding.latency(images, 1, tau=5.0, threshold=threshold, normalize=True)
    assert torch.equal(ours, ref)
    assert ours[0, 0, 128].item() == 1.0  # at the second threshold: equal, so it fires


@pytest.mark.parametrize("linear", [True, False])
def test_unnormalised_latency_matches_snntorch_when_it_fits(linear):
    steps = encoding.latency_last_step(2.0, 0.05, linear) + 1
    images = _all_levels()
    ref = spikegen.latency(
        images.reshape(1, -1).float() / 255,
        num_steps=steps,
        threshold=0.05,
        tau=2.0,
        clip=True,
        normalize=False,
        linear=linear,
    )
    ours = encoding.latency(images, steps, tau=2.0, threshold=0.05, linear=linear, normalize=False)
    assert torch.equal(ours, ref)
