"""Spiking metrics of any model by hooks: conv synaptic operations (NeuroBench's rule, and
NeuroBench itself where it is installed), spikes of snnTorch and snnbench neurons."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnbench.maths.neurons import LIFParams
from snnbench.maths.synops import conv2d_ops
from snnbench.networks.contract import Neuron
from snnbench.networks.hooks import Recorder, repeated
from snnbench.networks.layers import LIF

CONVS = [
    dict(in_channels=1, out_channels=4, kernel_size=5),
    dict(in_channels=3, out_channels=6, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2, groups=2),
    dict(in_channels=2, out_channels=3, kernel_size=(3, 2), padding=1, padding_mode="reflect"),
]


def _conv(spec: dict, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(**spec)
    with torch.no_grad():  # some zero weights, which do no operations
        conv.weight[torch.rand_like(conv.weight) < 0.3] = 0
    return conv


def _inputs(channels: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    spikes = (torch.rand(5, channels, 9, 8, generator=g) < 0.2).float()
    analog = torch.rand(5, channels, 9, 8, generator=g) * (spikes > 0)
    signed = spikes - (torch.rand(5, channels, 9, 8, generator=g) < 0.1).float()
    return {"spikes": spikes, "analog": analog, "signed": signed}


def _brute(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Pairs (nonzero input, nonzero weight) met by the kernel, position by position
    (groups=1, zero padding): unfold the input mask, multiply by the weight mask."""
    cols = F.unfold(
        (x != 0).double(), conv.kernel_size, conv.dilation, conv.padding, conv.stride
    )  # [N, C*kh*kw, L]
    w = (conv.weight != 0).double().reshape(conv.out_channels, -1)  # [O, C*kh*kw]
    return int((w @ cols).sum())


@pytest.mark.parametrize("spec", CONVS[:2])
def test_conv_synops_are_the_pairs_of_nonzero_input_and_weight(spec):
    conv = _conv(spec)
    for kind, x in _inputs(spec["in_channels"]).items():
        ops = conv2d_ops(x, conv)
        assert ops.synops == _brute(x, conv), kind
        assert ops.op == ("MAC" if kind == "analog" else "AC")
        assert ops.dense == _brute(torch.ones_like(x), nn.Conv2d(**spec).requires_grad_(False))
        assert ops.zeros == int((x == 0).sum()) and ops.values == x.numel()


@pytest.mark.parametrize("spec", CONVS, ids=[str(i) for i in range(len(CONVS))])
def test_conv_synops_equal_neurobench(spec):
    """NeuroBench 2.3's single_layer_MACs (SynapticOperations' per-layer count): effective
    operations, AC/MAC decision and dense (total) operations."""
    layers = pytest.importorskip("neurobench.metrics.utils.layers")
    conv = _conv(spec)
    for kind, x in _inputs(spec["in_channels"]).items():
        ours = conv2d_ops(x, conv)
        effective, spiking = layers.single_layer_MACs(x, conv)
        total, _ = layers.single_layer_MACs(x, conv, total=True)
        assert (ours.synops, ours.spike_input, ours.dense) == (effective, spiking, total), kind


def test_conv_counts_a_time_first_input_frame_by_frame():
    conv = _conv(CONVS[0])
    x = _inputs(1)["spikes"]
    whole = conv2d_ops(x.reshape(1, 5, 1, 9, 8), conv)  # [T=1, B=5, C, H, W]
    parts = conv2d_ops(x[:2], conv) + conv2d_ops(x[2:], conv)
    assert whole == parts


class StepCSNN(nn.Module):
    """snnTorch's tutorial CSNN shape, stepped over T (the user's own model)."""

    def __init__(self, neuron: Neuron):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 5), nn.Conv2d(4, 6, 5)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.lif1, self.lif2, self.lif3 = (neuron.snntorch() for _ in range(3))

    def forward(self, x: torch.Tensor):
        m1, m2, m3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        out = []
        for t in range(x.shape[0]):
            s1, m1 = self.lif1(F.max_pool2d(self.conv1(x[t]), 2), m1)
            s2, m2 = self.lif2(F.max_pool2d(self.conv2(s1), 2), m2)
            s3, m3 = self.lif3(self.fc(s2.flatten(1)), m3)
            out.append((s1, s2, s3, m3))
        return out


def test_hooks_count_an_snntorch_step_loop_as_neurobench_does():
    layers = pytest.importorskip("neurobench.metrics.utils.layers")
    torch.manual_seed(0)
    model = StepCSNN(Neuron(params=LIFParams(beta=0.8, threshold=0.5)))
    with torch.no_grad():
        model.conv1.weight.mul_(4)
        model.conv2.weight.mul_(3)
    x = (torch.rand(4, 3, 1, 28, 28) < 0.3).float()  # [T, B, 1, 28, 28]
    rec = Recorder(model)
    with torch.no_grad():
        out = model(x)
    rec.remove()
    # NeuroBench's count, layer by layer, on the inputs each layer got at each step
    expect = [0, 0, 0]
    for t, (s1, s2, _, _) in enumerate(out):
        c1_in = x[t]
        expect[0] += layers.single_layer_MACs(c1_in, model.conv1)[0]
        expect[1] += layers.single_layer_MACs(s1, model.conv2)[0]
        expect[2] += layers.single_layer_MACs(s2.flatten(1), model.fc)[0]
    assert [L.ops.synops for L in rec.synaptic] == expect
    assert all(L.ops.op == "AC" for L in rec.synaptic) and expect[1] > 0
    for i, r in enumerate(rec.spiking):
        spk = torch.stack([o[i] for o in out])
        assert r.spikes == spk.sum().item() and r.values == spk.numel()
    assert [r.name for r in rec.spiking] == ["lif1", "lif2", "lif3"]


def test_our_lif_layer_is_hooked_and_repeated_calls_count_per_step():
    lif = LIF(Neuron(params=LIFParams(beta=0.5)))
    conv = nn.Conv2d(1, 2, 3)
    model = nn.Sequential(conv, lif)
    rec = Recorder(model)
    frame = torch.rand(2, 1, 6, 6)  # the direct code: the same image at each of T=3 steps
    with torch.no_grad():
        with repeated(3):
            c = conv(frame)
        spk, _ = lif(c.unsqueeze(0).expand(3, 2, 2, 4, 4))
    rec.remove()
    assert rec.synaptic[0].ops == conv2d_ops(frame.expand(3, 2, 1, 6, 6), conv)
    assert rec.spiking[0].spikes == spk.sum().item() and rec.spiking[0].values == spk.numel()
    conv(frame)  # removed: nothing more is counted
    assert rec.synaptic[0].ops == conv2d_ops(frame.expand(3, 2, 1, 6, 6), conv)
