"""Benchmark: the conv SNN's fused multi-step engine vs snnTorch's step loop.

``python -m snnbench.conv_bench [--batch 128] [--steps 25] [--repeats 5]`` times one
training step (forward, cross-entropy, backward) of ``model=conv_snn`` (12C5-MP2-64C5-MP2-FC10,
leaky neurons) on MNIST-shaped input, for both engines on the same weights and input, under
rate coding (spikes) and direct coding (the image at every step), and prints the median
times and their ratio. Timings on a shared machine are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from snnbench.maths.engine import tune_cpu_allocator
from snnbench.networks.contract import Neuron
from snnbench.networks.conv import ConvSNN


def _models(steps_shape: tuple[int, ...]) -> tuple[ConvSNN, ConvSNN]:
    torch.manual_seed(0)
    neuron = Neuron()
    fused = ConvSNN((1, 28, 28), 10, neuron, engine="fused")
    ref = ConvSNN((1, 28, 28), 10, neuron, engine="snntorch")
    ref.convs.load_state_dict(fused.convs.state_dict())
    ref.fc.load_state_dict(fused.fc.state_dict())
    return fused, ref


def _step(model: ConvSNN, x: torch.Tensor, labels: torch.Tensor) -> float:
    t0 = time.perf_counter()
    out = model(x)
    F.cross_entropy(out.logits, labels).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m snnbench.conv_bench", description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25, help="T")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    T, B = args.steps, args.batch
    fused, ref = _models((T, B))
    g = torch.Generator().manual_seed(0)
    image = torch.rand(B, 1, 28, 28, generator=g) * (torch.rand(B, 1, 28, 28, generator=g) < 0.2)
    labels = torch.randint(0, 10, (B,), generator=g)
    inputs = {
        "rate": torch.bernoulli(
            image.unsqueeze(0).expand(T, *image.shape).contiguous(), generator=g
        ),
        "direct": image.unsqueeze(0).expand(T, *image.shape),  # stride 0 on T, as encoded
    }
    print(
        f"conv_snn 12C5-MP2-64C5-MP2-FC10, T={T}, B={B}, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}; fwd+bwd per batch, median of {args.repeats}"
    )
    print(f"{'coding':<8} {'fused ms':>10} {'snntorch ms':>12} {'speed-up':>9}")
    for coding, x in inputs.items():
        with torch.no_grad():
            a, b = fused(x), ref(x)
        same = all(torch.equal(s, r) for s, r in zip(a.spikes, b.spikes))
        times: dict[str, list[float]] = {"fused": [], "snntorch": []}
        _step(fused, x, labels), _step(ref, x, labels)  # warm-up
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            times["fused"].append(_step(fused, x, labels))
            times["snntorch"].append(_step(ref, x, labels))
        f, r = (statistics.median(times[k]) * 1e3 for k in ("fused", "snntorch"))
        note = "" if same else "  (spikes differ!)"
        print(f"{coding:<8} {f:>10.1f} {r:>12.1f} {r / f:>8.2f}x{note}")


if __name__ == "__main__":
    main()
