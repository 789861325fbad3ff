"""Event input equals the dense path: the same spikes from the same draws, currents to float32
summation order, weight and bias gradients as autograd of the dense Linear, the same model."""

from __future__ import annotations

import itertools
import json
import logging

import pytest
import torch
import torch.nn.functional as F

from snnbench.config import ConfigError, validate
from snnbench.dataio.inputs import Batcher
from snnbench.maths import encoding, events
from snnbench.maths.encoding import EncodingParams
from snnbench.maths.neurons import LIFParams
from snnbench.networks.mlp import SpikingMLP
from snnbench.run.results import METRICS_FILE
from snnbench.run.training import run

DENSITIES = (0.0, 0.01, 0.13, 0.5, 1.0)
STEPS = (1, 7, 100)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (the absolute difference when b is all zeros)."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def spikes(T: int, B: int, N: int, density: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, N, generator=g) < density).to(torch.float32)


@pytest.mark.parametrize("density,T", list(itertools.product(DENSITIES, STEPS)))
def test_layer_equals_dense_forward_and_gradients(density, T):
    B, N, n_out = 5, 784, 33  # n_out: not a multiple of a vector width
    x = spikes(T, B, N, density, seed=T)
    ev = events.from_dense(x)
    assert ev.shape == (T, B, N) and ev.nnz == int(x.sum())
    assert torch.equal(ev.to_dense(), x)

    torch.manual_seed(1)
    dense, sparse = torch.nn.Linear(N, n_out), torch.nn.Linear(N, n_out)
    sparse.load_state_dict(dense.state_dict())
    cur_d = dense(x.reshape(T * B, N)).reshape(T, B, n_out)
    cur_e = events.event_linear(ev, sparse)
    assert cur_e.shape == (T, B, n_out)
    assert rel_err(cur_e, cur_d) < 1e-6 + 1e-5 * (density > 0)
    g = torch.randn(T, B, n_out, generator=torch.Generator().manual_seed(2))
    (cur_d * g).sum().backward()
    (cur_e * g).sum().backward()
    assert rel_err(sparse.weight.grad, dense.weight.grad) < 1e-5
    assert rel_err(sparse.bias.grad, dense.bias.grad) < 1e-5
    if density == 0:
        assert torch.count_nonzero(sparse.weight.grad) == 0


def test_layer_without_bias_and_only_weight_grad():
    x = spikes(4, 3, 40, 0.3)
    ev = events.from_dense(x)
    fc = torch.nn.Linear(40, 6, bias=False)
    cur = events.event_linear(ev, fc)
    assert rel_err(cur, fc(x)) < 1e-6
    fc.weight.requires_grad_(False)
    assert not events.event_linear(ev, fc).requires_grad


def test_weight_grad_matches_autograd_in_float64():
    """The kernel's float32 sums against the exact (float64) dense weight gradient."""
    T, B, N, n_out = 100, 7, 784, 16
    x = spikes(T, B, N, 0.13, seed=3)
    ev = events.from_dense(x)
    g = torch.randn(T * B, n_out, generator=torch.Generator().manual_seed(4))
    exact = g.double().t() @ x.reshape(T * B, N).double()
    assert rel_err(events.event_weight_grad(ev, g).double(), exact) < 1e-6


@pytest.mark.parametrize("T", STEPS)
def test_rate_events_are_the_rate_spikes_from_the_same_draws(T):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (9, 28, 28), dtype=torch.uint8, generator=g)
    images[0] = 0  # a black image: no events
    images[1, :4] = 255  # white pixels: a spike at every step
    for gain in (1.0, 0.3):
        g1 = torch.Generator().manual_seed(5)
        g2 = torch.Generator().manual_seed(5)
        dense = encoding.rate(images, T, gain, g1)
        ev = encoding.rate_events(images, T, gain, g2)
        assert torch.equal(ev.to_dense(), dense)
        assert torch.equal(g1.get_state(), g2.get_state())  # the same stream consumed
        assert ev.row_counts()[:, 0].sum() == 0
        if gain == 1.0:
            assert bool((ev.row_counts()[:, 1] >= 4 * 28).all())


@pytest.mark.parametrize("name", ["rate", "latency", "delta"])
def test_encode_events_equals_encode(name):
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    p = EncodingParams(name=name)
    for T in (1, 7):
        dense = encoding.encode(images, T, p, torch.Generator().manual_seed(1))
        ev = encoding.encode_events(images, T, p, torch.Generator().manual_seed(1))
        assert torch.equal(ev.to_dense(), dense)


def test_events_refuse_analog_input():
    with pytest.raises(ValueError, match="no event form"):
        encoding.encode_events(
            torch.zeros(2, 28, 28, dtype=torch.uint8), 3, EncodingParams("direct")
        )
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        events.from_dense(torch.full((2, 3, 4), 0.5))


def test_first_k_samples_equal_the_dense_slice():
    x = spikes(6, 7, 30, 0.4)
    ev = events.from_dense(x)
    for k in (0, 1, 4, 7):
        assert torch.equal(ev[:, :k].to_dense(), x[:, :k])
    with pytest.raises(TypeError):
        ev[0]


@pytest.mark.parametrize("neuron,T", list(itertools.product(["leaky", "synaptic"], [1, 7, 25])))
def test_model_with_events_equals_dense_input(neuron, T):
    sizes = [784, 24, 12, 5]
    p = LIFParams(beta=0.85, alpha=0.7)
    torch.manual_seed(0)
    dense = SpikingMLP(sizes, p, neuron=neuron, learn_beta=True)
    with torch.no_grad():
        for fc in dense.fcs:
            fc.weight.mul_(3.0)
    sparse = SpikingMLP(sizes, p, neuron=neuron, learn_beta=True)
    sparse.load_state_dict(dense.state_dict())
    x = spikes(T, 11, 784, 0.13, seed=T)
    labels = torch.arange(11) % 5
    out_d, out_e = dense(x), sparse(events.from_dense(x))
    for a, b in zip(out_e.spikes, out_d.spikes):
        # spikes may flip only where a membrane sits within float noise of the threshold
        assert (a != b).float().mean().item() < 1e-3
    assert out_d.spikes[0].sum() > 0
    assert rel_err(out_e.logits, out_d.logits) < 1e-4
    for out in (out_d, out_e):
        F.cross_entropy(out.logits, labels).backward()
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters()):
        assert rel_err(a.grad, b.grad) < 1e-4, name


def test_kernels_leave_torch_thread_count_alone():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ev = events.from_dense(spikes(3, 4, 20, 0.5))
        events.event_weight_grad(ev, torch.ones(12, 3))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------- selection and runs


@pytest.mark.parametrize(
    "overrides,expect",
    [
        ((), True),  # the study's temporal model, rate code, CPU: auto picks events
        (("model.event_input=on",), True),
        (("model.event_input=off",), False),
        (("encoding=latency",), True),
        (("encoding=delta",), True),
        (("encoding=direct",), False),  # analog input
        (("model.engine=snntorch",), False),  # the reference loop stays as it is
        (("model=ann",), False),
    ],
)
def test_batcher_selects_events_where_they_apply(make_cfg, overrides, expect):
    cfg = make_cfg("model.num_steps=3", *overrides)
    validate(cfg)
    batcher = Batcher(cfg)
    assert batcher.events is expect
    x = batcher(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8), torch.Generator())
    assert isinstance(x, events.SpikeEvents) is expect


@pytest.mark.parametrize(
    "overrides",
    [
        ("encoding=direct",),
        ("model=ann",),
        ("model.engine=snntorch",),
        ("model=single_step",),  # direct encoding by default
    ],
)
def test_event_input_on_is_refused_where_it_cannot_run(make_cfg, overrides):
    cfg = make_cfg("model.event_input=on", *overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.event_input='on' is not allowed")


def test_event_input_value_is_checked(make_cfg):
    with pytest.raises(ConfigError, match="model.event_input='yes' is not allowed"):
        validate(make_cfg("model.event_input=yes"))


def test_without_numba_the_batcher_stays_dense_with_one_log_line(make_cfg, monkeypatch, caplog):
    monkeypatch.setattr(events, "numba", None)
    monkeypatch.setattr(events, "_WARNED", False)
    with caplog.at_level(logging.WARNING, logger="snnbench"):
        assert Batcher(make_cfg("model.event_input=on")).events is False
        assert Batcher(make_cfg()).events is False
    lines = [r for r in caplog.records if "event input unavailable" in r.getMessage()]
    assert len(lines) == 1


def test_tiny_training_gives_the_same_metrics_with_events_on_and_off(make_cfg, tmp_path):
    # 300 training images in batches of 64: the last batch is short
    common = ("model.num_steps=10", "dataset.train_subset=300", "trainer.epochs=2")
    records = []
    for mode in ("on", "off"):
        run_dir = tmp_path / mode
        run(make_cfg(*common, f"model.event_input={mode}", run_dir=run_dir))
        records.append(json.loads((run_dir / METRICS_FILE).read_text()))
    on, off = records
    assert on["status"] == off["status"] == "completed"
    for a, b in zip(on["history"], off["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=2 / 300)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=2 / 200)
    sp_on, sp_off = on["spiking"], off["spiking"]
    for la, lb in zip(sp_on["layers"], sp_off["layers"]):
        assert la["op"] == lb["op"] == "AC"
        assert la["synops_per_sample"] == pytest.approx(lb["synops_per_sample"], rel=1e-3)
    # layer 1's input is the same spikes exactly: its counts are equal
    assert sp_on["layers"][0]["synops_per_sample"] == sp_off["layers"][0]["synops_per_sample"]
    assert sp_on["accuracy"] == pytest.approx(sp_off["accuracy"], abs=2 / 200)


def test_kernels_agree_on_the_calling_thread_and_split_over_threads(monkeypatch):
    """Small work runs on the calling thread, large work in parallel chunks: the same rate
    events (exactly) and weight gradient (to summation order) either way."""
    images = torch.randint(0, 256, (21, 28, 28), dtype=torch.uint8)
    g = torch.randn(13 * 21, 40, generator=torch.Generator().manual_seed(1))
    out = {}
    for name, threshold in (("serial", 1 << 40), ("parallel", 0)):
        monkeypatch.setattr(events, "PARALLEL_MIN", threshold)
        ev = encoding.rate_events(images, 13, 0.8, torch.Generator().manual_seed(2))
        out[name] = ev, events.event_weight_grad(ev, g)
    (ev_s, w_s), (ev_p, w_p) = out["serial"], out["parallel"]
    assert torch.equal(ev_s.offsets, ev_p.offsets) and torch.equal(ev_s.indices, ev_p.indices)
    assert torch.equal(w_p, w_s)  # fixed sample ranges summed in order: the same sums
    exact = g.double().t() @ ev_s.to_dense().reshape(13 * 21, -1).double()
    assert rel_err(w_s.double(), exact) < 1e-6


def bits_to_dense(b: events.StepBits, T: int, N: int) -> torch.Tensor:
    """Decode :class:`events.StepBits` into the spike tensor ``[T, B, N]`` (plain loops)."""
    B = b.active.shape[0]
    out = torch.zeros(T, B, N)
    for s in range(B):
        for j in range(int(b.n_active[s])):
            i = int(b.active[s, j])
            for t in range(T):
                out[t, s, i] = float((int(b.bits[s, t // 4, j]) >> (t % 4)) & 1)
    return out


@pytest.mark.parametrize("T", [1, 5, 13])
def test_step_bits_of_the_encoder_and_of_the_csr_are_the_same_spikes(T):
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    images[0] = 0
    images[1, :3] = 255
    ev = encoding.rate_events(images, T, 0.9, torch.Generator().manual_seed(3))
    dense = ev.to_dense()
    assert ev.by_sample is not None
    assert torch.equal(bits_to_dense(ev.by_sample, T, 784), dense)
    csr_only = events.SpikeEvents(ev.offsets, ev.indices, T, 4, 784)
    assert torch.equal(bits_to_dense(csr_only.step_bits(), T, 784), dense)
    assert torch.equal(bits_to_dense(ev[:, :2].step_bits(), T, 784), dense[:, :2])


@pytest.mark.parametrize("T", [1, 2, 5, 63, 64, 65, 130])
def test_layer_by_sample_with_complements_across_word_boundaries(T, monkeypatch):
    """Pairs that spike at most steps take the all-steps sum minus the silent steps, forward
    and backward; T around multiples of 64 (the bit words) and of 4 (the encoder's groups);
    the by-sample form at every T (the layer uses it from BY_SAMPLE_MIN_STEPS on, its
    gradient from WGRAD_BY_SAMPLE_MIN_STEPS on)."""
    monkeypatch.setattr(events, "BY_SAMPLE_MIN_STEPS", 1)
    monkeypatch.setattr(events, "WGRAD_BY_SAMPLE_MIN_STEPS", 1)
    B, N, n_out = 3, 50, 19
    g0 = torch.Generator().manual_seed(T)
    p = torch.rand(1, B, N, generator=g0)  # per-pair rates from 0 to 1: both paths
    x = (torch.rand(T, B, N, generator=g0) < p).float()
    x[:, 0, 0] = 1.0  # every step
    x[:, 0, 1] = 0.0
    x[T - 1, 0, 1] = 1.0  # only the last step
    ev = events.from_dense(x)
    g = torch.randn(T * B, n_out, generator=g0)
    exact = g.double().t() @ x.reshape(T * B, N).double()
    got = events.event_weight_grad(ev, g)
    assert rel_err(got.double(), exact) < 1e-6
    w = torch.randn(n_out, N, generator=g0)
    cur = events.event_forward(ev, w, None)
    exact_cur = x.reshape(T * B, N).double() @ w.double().t()
    assert rel_err(cur.double(), exact_cur) < 1e-6
    images = torch.randint(0, 256, (B, 28, 28), dtype=torch.uint8, generator=g0)
    images[1] = 0  # a black image: no input can spike, its rows still count for the bias
    enc = encoding.rate_events(images, T, 1.0, g0)
    g = torch.randn(T * B, n_out, generator=g0)
    exact = g.double().t() @ enc.to_dense().reshape(T * B, -1).double()
    grad_w, grad_b = events.event_grads(enc, g)
    assert rel_err(grad_w.double(), exact) < 1e-6
    assert rel_err(grad_b.double(), g.double().sum(0)) < 1e-6


@pytest.mark.parametrize("threads", [1, 2])
def test_by_sample_and_event_by_event_agree(threads, monkeypatch):
    """The two forms of the layer (by sample from BY_SAMPLE_MIN_STEPS on, event by event
    below) on the same events, on the calling thread and split over threads."""
    monkeypatch.setattr(events, "PARALLEL_MIN", 0 if threads > 1 else 1 << 40)
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    w = torch.randn(40, 784)
    for T in (1, 5, 8, 30):
        ev = encoding.rate_events(images, T, 1.0, torch.Generator().manual_seed(T))
        g = torch.randn(T * 6, 40, generator=torch.Generator().manual_seed(1))
        out = []
        for threshold in (1, 1000):
            monkeypatch.setattr(events, "BY_SAMPLE_MIN_STEPS", threshold)
            monkeypatch.setattr(events, "WGRAD_BY_SAMPLE_MIN_STEPS", threshold)
            out.append((events.event_forward(ev, w, None), *events.event_grads(ev, g)))
        for a, b in zip(*out):
            assert rel_err(a, b) < 1e-6
