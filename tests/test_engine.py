"""The fused engine equals snnTorch: spikes exactly, membranes and gradients to float32
tolerance, for every neuron x reset x surrogate x learnable beta x T; and the rate encoder
is Bernoulli(pixel/255) at its stated resolution."""

from __future__ import annotations

import itertools
import math

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F

from snnbench.maths import encoding
from snnbench.maths.engine import neuron_sequence
from snnbench.maths.neurons import DEFAULT_SLOPE, LIFParams
from snnbench.networks.mlp import SpikingMLP, _snntorch_surrogate

NEURONS = ("leaky", "synaptic")
RESETS = ("subtract", "zero", "none")
SURROGATES = ("atan", "fast_sigmoid", "sigmoid")
STEPS = (1, 7, 25)
SIZES = [24, 16, 12, 5]
B = 6


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def make_pair(neuron, reset, surrogate, learn_beta, seed=0):
    # sigmoid at slope 1: snnTorch's form of it overflows to NaN for membranes more than
    # 88/slope below threshold, which larger slopes reach here (see the last test)
    slope = 1.0 if surrogate == "sigmoid" else None
    p = LIFParams(beta=0.85, alpha=0.7, reset=reset, surrogate=surrogate, slope=slope)
    kw = dict(params=p, neuron=neuron, learn_beta=learn_beta)
    torch.manual_seed(seed)
    fused = SpikingMLP(SIZES, engine="fused", **kw)
    with torch.no_grad():  # larger weights so that every layer spikes often
        for fc in fused.fcs:
            fc.weight.mul_(3.0)
    ref = SpikingMLP(SIZES, engine="snntorch", **kw)
    ref.fcs.load_state_dict(fused.fcs.state_dict())
    return fused, ref


def loss_of(out, labels):
    # logits (output membrane) plus the output spikes, so both outputs carry gradient
    return F.cross_entropy(out.logits, labels) + 0.05 * out.spikes[-1].sum()


@pytest.mark.parametrize(
    "neuron,reset,surrogate,learn_beta",
    list(itertools.product(NEURONS, RESETS, SURROGATES, (False, True))),
)
def test_fused_model_equals_snntorch(neuron, reset, surrogate, learn_beta):
    for T in STEPS:
        fused, ref = make_pair(neuron, reset, surrogate, learn_beta, seed=T)
        g = torch.Generator().manual_seed(100 + T)
        x = (torch.rand(T, B, SIZES[0], generator=g) < 0.4).float()
        labels = torch.randint(0, SIZES[-1], (B,), generator=g)
        out_f, out_r = fused(x), ref(x)
        for sf, sr in zip(out_f.spikes, out_r.spikes):
            assert torch.equal(sf, sr), f"spikes differ at T={T}"
        if T > 1:  # the test means something only if the neurons fire (and not always)
            rates = [s.mean().item() for s in out_f.spikes[:-1]]
            assert all(0.02 < r < 0.9 for r in rates), rates
        assert (out_f.mem_out - out_r.mem_out).abs().max().item() <= 1e-5
        opt_f = torch.optim.Adam(fused.parameters(), lr=1e-3)
        opt_r = torch.optim.Adam(ref.parameters(), lr=1e-3)
        loss_of(out_f, labels).backward()
        loss_of(out_r, labels).backward()
        assert all(torch.isfinite(fc.weight.grad).all() for fc in ref.fcs)
        for fc_f, fc_r in zip(fused.fcs, ref.fcs):
            assert rel_err(fc_f.weight.grad, fc_r.weight.grad) <= 1e-4
            assert rel_err(fc_f.bias.grad, fc_r.bias.grad) <= 1e-4
        betas_f, betas_r = fused.layer_betas(), ref.layer_betas()
        if learn_beta:
            for bf, br in zip(betas_f, betas_r):
                assert bf.grad is not None and br.grad is not None
                assert rel_err(bf.grad, br.grad) <= 1e-4 or abs(bf.grad - br.grad) <= 1e-6
        opt_f.step()
        opt_r.step()
        # one Adam step moves each weight by ~lr * g / |g|: equal wherever the gradient is
        # above float32 rounding noise (Adam's g / (|g| + eps) amplifies the rounding of
        # gradients that are ~0; snnTorch's spike functions are float32-only, so no float64)
        for fc_f, fc_r in zip(fused.fcs, ref.fcs):
            for w_f, w_r in ((fc_f.weight, fc_r.weight), (fc_f.bias, fc_r.bias)):
                big = w_r.grad.abs() >= 1e-3 * w_r.grad.abs().max()
                assert (w_f - w_r)[big].abs().max().item() <= 1e-6
        for bf, br in zip(betas_f, betas_r):
            torch.testing.assert_close(bf.detach(), br.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("neuron", NEURONS)
def test_constant_input_computes_layer_one_once_with_equal_results(neuron):
    """Direct encoding gives the same input at every step (a stride-0 view): the fused
    engine runs layer 1 once on [B, in] and must still equal snnTorch."""
    fused, ref = make_pair(neuron, "subtract", "atan", learn_beta=False)
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(B, SIZES[0], generator=g) * 0.8
    x = x0.unsqueeze(0).expand(9, B, SIZES[0])
    assert x.stride(0) == 0
    labels = torch.randint(0, SIZES[-1], (B,), generator=g)
    out_f, out_r = fused(x), ref(x)
    for sf, sr in zip(out_f.spikes, out_r.spikes):
        assert torch.equal(sf, sr)
    assert (out_f.mem_out - out_r.mem_out).abs().max().item() <= 1e-5
    loss_of(out_f, labels).backward()
    loss_of(out_r, labels).backward()
    for fc_f, fc_r in zip(fused.fcs, ref.fcs):
        assert rel_err(fc_f.weight.grad, fc_r.weight.grad) <= 1e-4
        assert rel_err(fc_f.bias.grad, fc_r.bias.grad) <= 1e-4


def snntorch_neuron(neuron: str, p: LIFParams, beta: torch.Tensor):
    kw = dict(
        beta=beta,
        threshold=p.threshold,
        spike_grad=_snntorch_surrogate(p.surrogate, p.surrogate_slope),
        reset_mechanism=p.reset,
    )
    lif = snn.Leaky(**kw) if neuron == "leaky" else snn.Synaptic(alpha=p.alpha, **kw)
    snn.SpikingNeuron.instances.clear()
    return lif


@pytest.mark.parametrize(
    "neuron,reset,surrogate", list(itertools.product(NEURONS, RESETS, SURROGATES))
)
def test_neuron_sequence_gradients_of_both_outputs(neuron, reset, surrogate):
    """Upstream gradients on spikes *and* membranes at every step, beta above 1 (clamped)
    and inside (0, 1): input and beta gradients match snnTorch stepped by hand."""
    slope = 2.0 if surrogate == "sigmoid" else DEFAULT_SLOPE[surrogate] * 0.5  # see above
    p = LIFParams(alpha=0.8, threshold=0.7, reset=reset, surrogate=surrogate, slope=slope)
    for T, beta0 in ((1, 0.9), (9, 0.9), (9, 1.2)):
        g = torch.Generator().manual_seed(T)
        cur = torch.randn(T, 3, 10, generator=g) * 0.8 + 0.3
        gs, gm = torch.randn(T, 3, 10, generator=g), torch.randn(T, 3, 10, generator=g)
        cur_f = cur.clone().requires_grad_()
        beta_f = torch.tensor(beta0, requires_grad=True)
        spk_f, mem_f = neuron_sequence(neuron, cur_f, p, beta_f)
        ((spk_f * gs).sum() + (mem_f * gm).sum()).backward()

        cur_r = cur.clone().requires_grad_()
        beta_r = torch.nn.Parameter(torch.tensor(beta0))
        lif = snntorch_neuron(neuron, p, beta_r)
        state = lif.reset_mem()
        state = (state,) if neuron == "leaky" else state
        spk_r, mem_r = [], []
        for t in range(T):
            out = lif(cur_r[t], *state)
            state = tuple(out[1:])
            spk_r.append(out[0])
            mem_r.append(state[-1])
        spk_r, mem_r = torch.stack(spk_r), torch.stack(mem_r)
        ((spk_r * gs).sum() + (mem_r * gm).sum()).backward()

        assert torch.equal(spk_f, spk_r)
        assert (mem_f - mem_r).abs().max().item() <= 1e-5
        assert rel_err(cur_f.grad, cur_r.grad) <= 1e-4
        if beta0 > 1:  # the clamp at 1 stops the gradient, in both
            assert beta_f.grad.item() == 0.0 and beta_r.grad.item() == 0.0
        else:
            assert rel_err(beta_f.grad, beta_r.grad) <= 1e-4


def test_hidden_membranes_without_gradient_and_no_grad_mode():
    p = LIFParams()
    cur = torch.randn(5, 2, 4).requires_grad_()
    spk, mem = neuron_sequence("leaky", cur, p)
    spk.sum().backward()  # mem unused: its gradient is None inside the node
    assert cur.grad is not None and torch.isfinite(cur.grad).all()
    with torch.no_grad():
        spk2, mem2 = neuron_sequence("synaptic", cur, p)
    assert not spk2.requires_grad and spk2.shape == (5, 2, 4)
    with pytest.raises(ValueError, match="neuron.name"):
        neuron_sequence("izhikevich", cur, p)


def test_rate_encoder_is_bernoulli_at_stated_resolution():
    """Every pixel level 0..255: the empirical rate is within 5 standard errors of the
    encoder's stated probability, which is within 2**-16 of pixel/255 (exact at 0 and 1);
    steps are independent (no correlation between t and t+1)."""
    stated = encoding.rate_probability(torch.arange(256, dtype=torch.uint8).reshape(1, 256))[0]
    exact = torch.arange(256, dtype=torch.float64) / 255
    assert (stated - exact).abs().max().item() <= 2**-16 + 1e-12
    assert stated[0] == 0 and stated[-1] == 1

    images = torch.arange(256, dtype=torch.uint8).repeat(400, 1)  # [400, 256]
    T = 100
    spikes = encoding.rate(images, T, generator=torch.Generator().manual_seed(3))
    assert spikes.shape == (T, 400, 256) and spikes.dtype == torch.float32
    n = T * 400
    freq = spikes.double().mean((0, 1))
    se = torch.sqrt(stated * (1 - stated) / n)
    assert torch.all((freq - stated).abs() <= 5 * se + 1e-12)
    assert freq[0] == 0 and freq[-1] == 1
    # independence over time: corr(s[t], s[t+1]) ~ 0 at p ~ 1/2
    s = spikes[:, :, 128].double()
    a, b = s[:-1].flatten(), s[1:].flatten()
    corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(corr.item()) < 5 / math.sqrt(a.numel())
    # gain: p = clamp(gain * pixel / 255, 0, 1), same resolution
    s2 = encoding.rate(images[:, 200:201], 50, gain=2.0, generator=torch.Generator().manual_seed(4))
    assert s2.mean().item() == 1.0  # 2 * 200 / 255 > 1


def test_rate_generator_follows_device_and_is_repeatable():
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    a = encoding.rate(images, 4, generator=torch.Generator().manual_seed(9))
    b = encoding.rate(images, 4, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    if torch.cuda.is_available():
        gpu = torch.Generator(device="cuda").manual_seed(9)
        c = encoding.rate(images.cuda(), 4, generator=gpu)
        assert c.device.type == "cuda" and c.shape == a.shape


def test_sigmoid_surrogate_is_finite_where_snntorch_overflows():
    p = LIFParams(surrogate="sigmoid", slope=25.0)
    cur = torch.tensor([[[-10.0, 0.5, 1.2]]]).requires_grad_()
    spk, _ = neuron_sequence("leaky", cur, p)
    spk.sum().backward()
    slope, u = 25.0, cur.detach() - 1.0
    s = torch.sigmoid(slope * u)
    assert torch.isfinite(cur.grad).all()
    torch.testing.assert_close(cur.grad, slope * s * (1 - s))
