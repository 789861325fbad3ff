"""Encoders: shapes, exact Bernoulli statistics, and snnTorch's latency/delta semantics."""

from __future__ import annotations

import math

import pytest
import torch
from snntorch import spikegen

from snnbench.maths import encoding, events


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


# ----------------------------------------------------------------- the rate sampler's statistics
# The rate code's spikes come from a counter-based generator (SplitMix64 at a position given
# by sample, input and group of four steps; four 15-bit lanes per output). The checks below
# are run on the sampler itself and on samplers broken on purpose, which they must reject.
# Each check is a z-test at |z| <= 5 (two-sided false-alarm rate 5.7e-7 per statistic) or a
# chi-square at the 1e-6 upper quantile; with the fixed seeds here the outcome is fixed.

Z_MAX = 5.0
CHI2_15DF_1E6 = 56.49  # upper 1e-6 quantile of chi-square with 15 degrees of freedom


def reference_sampler(key, k1, T, lane_shift=16, lane_mask=0x7FFF, pair_inputs=False, mix=True):
    """The sampler written out again (torch, int64 bits); the defaults are the real one, the
    options break it: lanes that overlap (lane_shift < 15), fewer bits than the thresholds
    (lane_mask), neighbouring inputs sharing draws (pair_inputs), no output mixing (mix)."""
    B, N = k1.shape
    G = (T + 3) // 4
    srl = encoding._srl
    inputs = torch.arange(N) // 2 * 2 if pair_inputs else torch.arange(N)
    n = ((torch.arange(B).view(B, 1) * N + inputs) * G).view(1, B, N)
    n = n + torch.arange(1, G + 1).view(G, 1, 1)
    z = n * encoding._int64(encoding._GAMMA) + encoding._int64(key % 2**64)
    if mix:
        z = (z ^ srl(z, 30)) * encoding._int64(encoding._MIX1)
        z = (z ^ srl(z, 27)) * encoding._int64(encoding._MIX2)
        z = z ^ srl(z, 31)
    lanes = torch.stack([(z >> (lane_shift * lane)) & lane_mask for lane in range(4)], 1)
    return (lanes.reshape(4 * G, B, N)[:T] <= k1.long()).float()


BROKEN = {
    "biased (14-bit lanes)": dict(lane_mask=0x3FFF),
    "correlated steps (overlapping lanes)": dict(lane_shift=4),
    "correlated inputs (shared draws)": dict(pair_inputs=True),
    "unmixed counter (Weyl sequence)": dict(mix=False),
}


def frequency_z(spikes: torch.Tensor, stated: torch.Tensor) -> float:
    """max over inputs of |freq - p| / SE; spikes [T, B, N], stated P per input [N]."""
    n = spikes.shape[0] * spikes.shape[1]
    freq = spikes.double().mean((0, 1))
    se = torch.sqrt(stated * (1 - stated) / n)
    mid = (stated > 0) & (stated < 1)
    assert torch.equal(freq[~mid], stated[~mid])  # p = 0, 1: exact
    return ((freq - stated).abs()[mid] / se[mid]).max().item()


def lag_z(spikes: torch.Tensor, stated: torch.Tensor, dim: int, lag: int) -> float:
    """z of the pooled correlation of (s - p) with itself ``lag`` apart along ``dim``
    (0: steps, 1: samples, 2: inputs) over inputs with 0 < p < 1."""
    x = spikes.double() - stated
    a, b = x.narrow(dim, 0, x.shape[dim] - lag), x.narrow(dim, lag, x.shape[dim] - lag)
    v = stated * (1 - stated)
    if dim == 2:  # neighbouring inputs: variance of each side
        va, vb = v[: v.shape[0] - lag], v[lag:]
        keep = (va > 0) & (vb > 0)
        prod = (a * b)[..., keep] / torch.sqrt(va * vb)[keep]
    else:
        keep = v > 0
        prod = (a * b)[..., keep] / v[keep]
    return (prod.mean() * math.sqrt(prod.numel())).abs().item()


def pattern_chi2(spikes: torch.Tensor, column: int, offset: int) -> float:
    """Chi-square of the 16 patterns of four consecutive steps (from ``offset``, every
    four) of an input whose stated p is 1/2 (``column``)."""
    s = spikes[offset:, :, column]
    T4 = s.shape[0] // 4 * 4
    w = s[:T4].reshape(T4 // 4, 4, -1).long()
    code = (w[:, 0] * 8 + w[:, 1] * 4 + w[:, 2] * 2 + w[:, 3]).flatten()
    counts = torch.bincount(code, minlength=16).double()
    expected = code.numel() / 16
    return (((counts - expected) ** 2) / expected).sum().item()


def sampler_passes(spikes: torch.Tensor, stated: torch.Tensor, half: int) -> dict[str, bool]:
    """Every check on spikes ``[T, B, N]`` of stated probabilities ``[N]``; ``half``: an
    input with p = 1/2."""
    out = {"frequency": frequency_z(spikes, stated) <= Z_MAX}
    for lag in (1, 2, 3, 4, 5):
        out[f"steps lag {lag}"] = lag_z(spikes, stated, 0, lag) <= Z_MAX
    out["samples"] = lag_z(spikes, stated, 1, 1) <= Z_MAX
    out["inputs"] = lag_z(spikes, stated, 2, 1) <= Z_MAX
    for offset in (0, 2):
        out[f"patterns from {offset}"] = pattern_chi2(spikes, half, offset) <= CHI2_15DF_1E6
    return out


def _stats_inputs(samples: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Thresholds k1 ``[samples, 257]`` and stated P ``[257]``: the 256 pixel levels at
    gain 1, plus an input with p = 1/2 exactly (k = 16384; no pixel level gives it)."""
    images = torch.arange(256, dtype=torch.uint8).repeat(samples, 1)
    half = torch.full((samples, 1), 2**14 - 1, dtype=torch.int16)
    k1 = torch.cat([encoding.rate_thresholds(images), half], 1)
    stated = torch.cat([encoding.rate_probability(images[:1])[0], torch.tensor([0.5])])
    return k1, stated.double()


T_STATS = 64  # steps: 16 groups of four


def test_rate_sampler_passes_the_statistical_checks():
    k1, stated = _stats_inputs()
    key = encoding.rate_key(torch.Generator().manual_seed(11))
    ref = reference_sampler(key, k1, T_STATS)
    assert torch.equal(encoding.rate_torch(key, k1, T_STATS), ref)  # the test's copy is it
    if events.available():
        assert torch.equal(events.rate_dense(key, k1, T_STATS), ref)
        assert torch.equal(events.rate_events(key, k1, T_STATS).to_dense(), ref)
    result = sampler_passes(ref, stated, half=256)
    assert all(result.values()), result


@pytest.mark.parametrize("name", list(BROKEN))
def test_statistical_checks_reject_a_broken_sampler(name):
    k1, stated = _stats_inputs()
    key = encoding.rate_key(torch.Generator().manual_seed(11))
    result = sampler_passes(reference_sampler(key, k1, T_STATS, **BROKEN[name]), stated, 256)
    assert not all(result.values()), f"{name} passed every check: {result}"


def test_rate_is_reproducible_by_seed_and_resumes_from_generator_state():
    """The same seed gives the same spikes; a generator restored from a saved state (as a
    checkpoint does) continues with exactly the spikes the uninterrupted run draws."""
    images = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    first = [encoding.rate(images, 9, generator=g) for _ in range(2)]
    saved = g.get_state()
    after = [encoding.rate(images, 9, generator=g) for _ in range(2)]
    g2 = torch.Generator().manual_seed(3)
    assert all(torch.equal(a, encoding.rate(images, 9, generator=g2)) for a in first)
    g3 = torch.Generator().manual_seed(99)
    g3.set_state(saved)
    assert all(torch.equal(a, encoding.rate(images, 9, generator=g3)) for a in after)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], after[0])


def test_checkpoint_from_the_older_rate_sampler_resumes_with_one_line(caplog):
    """A checkpoint's RNG states without the sampler's name (written before the counter-based
    sampler) restore and say once that the spikes differ from there on; a current one is
    silent."""
    from snnbench.run import checkpoint

    shuffle, enc = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state = checkpoint.rng_state(shuffle, enc)
    assert state["rate_sampler"] == encoding.RATE_SAMPLER
    with caplog.at_level("WARNING", logger="snnbench"):
        checkpoint.set_rng_state(state, shuffle, enc)
        assert not caplog.records
        old = {k: v for k, v in state.items() if k != "rate_sampler"}
        checkpoint.set_rng_state(old, shuffle, enc)
    (rec,) = caplog.records
    assert "rate sampler" in rec.getMessage() and encoding.RATE_SAMPLER in rec.getMessage()
    assert torch.equal(enc.get_state(), state["encode"])
