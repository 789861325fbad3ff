"""Benchmark: ms per training step of the temporal SNN with the snnTorch loop, the fused
engine (dense and event input) and the GEMM floor; saved-for-backward memory; data +
encoding share of an epoch; layer 1 dense vs events and the parts of the events step.

``python -m snnbench.bench [--steps 25 100] [--repeats 7] [--devices cpu cuda]
[--batch-size 128] [--json bench_results/bench.json]``

One training step = encode a batch of uint8 MNIST images + forward + backward + Adam,
784-256-128-10, readout = output membrane averaged over T, cross-entropy:

* ``snntorch``: the study's code — ``snntorch.spikegen.rate`` (``torch.bernoulli`` on a
  float copy) and a Python loop over T calling ``snn.Leaky`` (``model.engine=snntorch``);
* ``fused``: :func:`snnbench.maths.encoding.rate` and ``model.engine=fused`` (each Linear once over
  ``[T*B, in]``, the LIF recurrence as one autograd node per layer);
* ``events``: :func:`snnbench.maths.encoding.rate_events` (the same spikes as events) and the fused
  engine with event input for layer 1 (``model.event_input``; CPU, needs numba);
* ``gemm``: the floor — the three Linears fwd+bwd as one matmul each over all ``T*B`` rows,
  no neurons, input already encoded (its ``encode_ms`` is 0);
* ``events-bf16``, ``fused-bf16``, ``gemm-bf16``: the same under ``trainer.precision=
  bf16-mixed`` (the Linears in bfloat16 autocast; the event layer and the neurons float32).
  Their ratios are to the float32 floor (``gemm``), the targets' yardstick.

Each repeat times every (T, engine) once, interleaved, in one process; the table shows
medians. On the CPU each repeat also times layer 1 alone (``[T*B, 784] x [784, 256]``
forward and weight gradient, dense vs events) and the parts of the events step: the
rate encoder (events, draws included), the neuron recurrences (forward + backward, all
layers) and layers 2-3 (forward + backward GEMMs) — where the time of a step goes.

``saved_mb`` is the memory autograd holds for backward after the forward pass
(unique storages of the tensors saved via ``torch.autograd.graph.saved_tensors_hooks``,
parameters included) — the part of peak training memory that grows with T; on CUDA
``peak_mb`` is ``torch.cuda.max_memory_allocated`` during one step. The data share is
(batch slicing + encoding) / (slicing + encoding + step) for the fused and events cases, i.e. the
fraction of a training epoch (evaluation excluded) spent producing inputs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from snnbench.dataio import data as data_mod
from snnbench.maths import events
from snnbench.maths.encoding import rate, rate_events, to_unit
from snnbench.maths.engine import autocast, neuron_sequence, tune_cpu_allocator
from snnbench.maths.neurons import LIFParams
from snnbench.measure.evaluation import logits_of
from snnbench.networks.mlp import SpikingMLP
from snnbench.run.results import write_json

SIZES = [784, 256, 128, 10]
ENGINES = ("snntorch", "fused", "events", "gemm", "events-bf16", "fused-bf16", "gemm-bf16")
BF16 = "-bf16"  # an engine name's suffix: the case runs under trainer.precision=bf16-mixed
BF16_BASES = ("events", "fused", "gemm")


class GemmFloor(nn.Module):
    """The three Linears over all ``T*B`` rows at once, no neurons: ``[T, B, 784]`` -> logits."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        h = x.reshape(T * B, -1)
        for fc in self.fcs:
            h = fc(h)
        return h.reshape(T, B, -1).mean(0)


#: The clock every timing reads: wall time (default) or, with ``--clock cpu``, the CPU time
#: of this process (``time.process_time``) — on a machine shared with other jobs, CPU time
#: with ``--threads 1`` does not count the time the scheduler gives to others.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def _now() -> float:
    return _clock()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """One (engine, T, device): its model, optimizer and encoder, timed step by step."""

    def __init__(self, engine: str, T: int, device: torch.device, seed: int = 0):
        self.engine, self.T, self.device = engine, T, device
        self.precision = "bf16-mixed" if engine.endswith(BF16) else "32"
        self.kind = engine.removesuffix(BF16)  # snntorch | fused | events | gemm
        torch.manual_seed(seed)
        if self.kind == "gemm":
            self.model: nn.Module = GemmFloor(SIZES)
        else:
            self.model = SpikingMLP(
                SIZES, LIFParams(), engine="snntorch" if engine == "snntorch" else "fused"
            )
        self.model.to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.encode_ms: list[float] = []
        self.step_ms: list[float] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "snntorch":  # the study's encoder
            from snntorch import spikegen

            return spikegen.rate(to_unit(images), num_steps=self.T)
        if self.kind == "events":
            return rate_events(images, self.T, generator=self.gen)
        return rate(images, self.T, generator=self.gen)

    def step(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        with autocast(self.precision, self.device):
            loss = F.cross_entropy(logits_of(self.model, x), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        _sync(self.device)
        t0 = _now()
        x = self.encode(images)
        _sync(self.device)
        t1 = _now()
        self.step(x, labels)
        _sync(self.device)
        t2 = _now()
        self.encode_ms.append(0.0 if self.kind == "gemm" else (t1 - t0) * 1e3)
        self.step_ms.append((t2 - t1) * 1e3)

    def saved_bytes(self, images: torch.Tensor, labels: torch.Tensor) -> int:
        """Bytes of unique storages autograd saves for backward during one forward pass."""
        x = self.encode(images)
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor):
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with autocast(self.precision, self.device):
                loss = F.cross_entropy(logits_of(self.model, x), labels)
        loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return sum(storages.values())

    def peak_cuda_bytes(self, images: torch.Tensor, labels: torch.Tensor) -> int | None:
        if self.device.type != "cuda":
            return None
        x = self.encode(images)
        _sync(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self.step(x, labels)
        _sync(self.device)
        return torch.cuda.max_memory_allocated(self.device) - base


#: What :class:`Parts` times (ms, per training step of one batch).
PARTS = (
    "l1_fwd_dense",
    "l1_fwd_events",
    "l1_wgrad_dense",
    "l1_wgrad_events",
    "encode_events",
    "neurons_fwd_bwd",
    "layers23_fwd_bwd",
)


class Parts:
    """Layer 1 alone, dense vs events, and the other parts of the events step, at one T (CPU).

    l1_*: ``[T*B, 784] x [784, 256]`` forward (with bias) and weight + bias gradient, as
    ``nn.Linear``/autograd computes them dense and as the event kernels do; encode_events:
    the rate encoder's events, draws included; neurons_fwd_bwd: the three LIF recurrences
    forward + backward, with the gradients a training step gives them (dL/dspikes of the
    hidden layers, dL/dmembrane of the output layer); layers23_fwd_bwd: the Linears
    256-128-10 forward + backward over ``[T*B, 256]`` spikes.
    """

    def __init__(self, T: int, seed: int = 0):
        torch.manual_seed(seed)
        self.T = T
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:]))
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.ms: dict[str, list[float]] = {k: [] for k in PARTS}

    def timed(self, images: torch.Tensor) -> None:
        T, B = self.T, images.shape[0]
        fc1, fc2, fc3 = self.fcs
        w, b = fc1.weight.detach(), fc1.bias.detach()
        clock = [_now()]

        def lap(key: str) -> None:
            clock.append(_now())
            self.ms[key].append((clock[-1] - clock[-2]) * 1e3)

        ev = rate_events(images, T, 1.0, self.gen)
        lap("encode_events")
        x = ev.to_dense().reshape(T * B, -1)
        g = torch.randn(T * B, w.shape[0])
        clock.append(_now())
        F.linear(x, w, b)
        lap("l1_fwd_dense")
        events.event_forward(ev, w, b)
        lap("l1_fwd_events")
        torch.mm(g.t(), x), g.sum(0)
        lap("l1_wgrad_dense")
        events.event_grads(ev, g)
        lap("l1_wgrad_events")
        currents = [torch.randn(T, B, n, requires_grad=True) for n in SIZES[1:]]
        # the gradients a training step gives them: dL/dspikes for the hidden layers (their
        # spikes feed the next Linear), dL/dmembrane for the output layer (mean-membrane
        # readout; its spikes are unused)
        grads = [torch.randn(T, B, n) / (T * B) for n in SIZES[1:]]
        clock.append(_now())
        for layer, (cur, grad) in enumerate(zip(currents, grads)):
            spk, mem = neuron_sequence("leaky", cur, LIFParams())
            out = mem if layer == len(currents) - 1 else spk
            torch.autograd.backward(out, grad)
        lap("neurons_fwd_bwd")
        h = (torch.rand(T * B, SIZES[1]) < 0.4).float().requires_grad_(True)
        clock.append(_now())
        fc3(fc2(h)).sum().backward()
        lap("layers23_fwd_bwd")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import snntorch

        info["snntorch"] = snntorch.__version__
    except ImportError:
        pass
    return info


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def data_ms_per_batch(split: data_mod.Split, batch_size: int, repeats: int = 3) -> float:
    """Median time to cut one shuffled epoch into batches, per batch (ms)."""
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        t0 = _now()
        batches = data_mod.batches(split, batch_size, gen)
        times.append((_now() - t0) * 1e3 / max(len(batches), 1))
    return _median(times)


def run_bench(
    steps: list[int],
    repeats: int,
    devices: list[str],
    batch_size: int,
    engines: list[str],
    warmup: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Time every (device, T, engine) ``repeats`` times, interleaved; return the results."""
    splits = data_mod.load("mnist", download=False, val_size=5000)
    train = splits.train
    results = []
    parts_out: list[dict] = []
    for dev_name in devices:
        device = torch.device(dev_name)
        split = train.to(device)
        batches = data_mod.batches(split, batch_size, torch.Generator().manual_seed(0))
        batches = [b for b in batches if b[1].shape[0] == batch_size]
        cpu_events = device.type == "cpu" and events.available()
        use = [e for e in engines if cpu_events or not e.startswith("events")]
        if len(use) < len(engines):
            log(f"[{dev_name}] no events cases (need the CPU and numba)")
        cases = [Case(e, T, device) for T in steps for e in use]
        parts = [Parts(T) for T in steps] if "events" in use else []
        log(f"[{dev_name}] warm-up ...")
        for case in cases:
            for i in range(warmup):
                case.step(case.encode(batches[i][0]), batches[i][1])
            case.encode_ms.clear()
            case.step_ms.clear()
        for part in parts:
            for i in range(warmup):
                part.timed(batches[i][0])
            part.ms = {k: [] for k in PARTS}
        for r in range(repeats):
            log(f"[{dev_name}] repeat {r + 1}/{repeats}")
            images, labels = batches[(warmup + r) % len(batches)]
            for case in cases:
                case.timed(images, labels)
            for part in parts:
                part.timed(images)
        data_ms = data_ms_per_batch(split, batch_size)
        images, labels = batches[0]
        for case in cases:
            enc, step = _median(case.encode_ms), _median(case.step_ms)
            results.append(
                {
                    "device": dev_name,
                    "T": case.T,
                    "engine": case.engine,
                    "encode_ms": enc,
                    "step_ms": step,
                    "total_ms": _median([a + b for a, b in zip(case.encode_ms, case.step_ms)]),
                    "step_ms_min": min(case.step_ms),
                    "total_ms_min": min(a + b for a, b in zip(case.encode_ms, case.step_ms)),
                    "step_ms_all": case.step_ms,
                    "encode_ms_all": case.encode_ms,
                    "data_ms": data_ms,
                    "saved_mb": case.saved_bytes(images, labels) / 2**20,
                    "peak_mb": (
                        None if (pk := case.peak_cuda_bytes(images, labels)) is None else pk / 2**20
                    ),
                }
            )
        for part in parts:
            row = {"device": dev_name, "T": part.T}
            row.update({f"{k}_ms": _median(v) for k, v in part.ms.items()})
            parts_out.append(row)
    return {
        "results": results,
        "ratios": ratios(results),
        "parts": parts_out,
        "targets": targets(results, parts_out),
    }


def ratios(results: list[dict]) -> list[dict]:
    """Per (device, T): snnTorch/fused speed-up, fused/GEMM-floor, data+encoding share."""
    out = []
    keys = sorted({(r["device"], r["T"]) for r in results})
    for dev, T in keys:
        by = {r["engine"]: r for r in results if r["device"] == dev and r["T"] == T}
        row: dict = {"device": dev, "T": T}
        f, s, g = by.get("fused"), by.get("snntorch"), by.get("gemm")
        e = by.get("events")
        if f and s:
            row["speedup_total"] = s["total_ms"] / f["total_ms"]
            row["speedup_model"] = s["step_ms"] / f["step_ms"]
            row["memory_ratio"] = f["saved_mb"] / s["saved_mb"]
        if f and g:
            row["fused_over_gemm"] = f["step_ms"] / g["step_ms"]
        if f:
            inputs = f["data_ms"] + f["encode_ms"]
            row["data_encoding_share"] = inputs / (inputs + f["step_ms"])
        if e and s:
            row["events_speedup_total"] = s["total_ms"] / e["total_ms"]
        if e and g:
            row["events_over_gemm"] = e["step_ms"] / g["step_ms"]
        if e and f:
            row["events_memory_over_fused"] = e["saved_mb"] / f["saved_mb"]
            row["events_speedup_over_fused"] = f["total_ms"] / e["total_ms"]
        if e:
            inputs = e["data_ms"] + e["encode_ms"]
            row["events_data_encoding_share"] = inputs / (inputs + e["step_ms"])
        for name in BF16_BASES:  # bf16-mixed, to the float32 floor
            low = by.get(name + BF16)
            if low and g:
                row[f"{name}_bf16_total_over_gemm"] = low["total_ms"] / g["step_ms"]
            if low and by.get(name):
                row[f"{name}_bf16_speedup"] = by[name]["total_ms"] / low["total_ms"]
        out.append(row)
    return out


#: The engine's goals as ratios within one run: (key, what, goal, "max" | "min").
TARGETS = (
    ("events_total_over_gemm", "events step with encoding / GEMM floor", {100: 0.5, 5: 1.0}, "max"),
    ("neurons_over_gemm", "neurons fwd+bwd / GEMM floor", {100: 0.1}, "max"),
    ("encoding_share", "encoding / events step with encoding", {100: 0.05}, "max"),
    ("snntorch_over_events", "snnTorch loop / events (with encoding)", {100: 6.0}, "min"),
    (
        "events_bf16_total_over_gemm",
        "events bf16-mixed step with encoding / float32 GEMM floor",
        {},
        "max",
    ),
)


def targets(results: list[dict], parts: list[dict]) -> list[dict]:
    """Per (device, T): the ratios the engine aims at (:data:`TARGETS`), measured here."""
    out = []
    for dev, T in sorted({(r["device"], r["T"]) for r in results}):
        by = {r["engine"]: r for r in results if r["device"] == dev and r["T"] == T}
        e, g, s = by.get("events"), by.get("gemm"), by.get("snntorch")
        part = next((p for p in parts if p["device"] == dev and p["T"] == T), None)
        row: dict = {"device": dev, "T": T}
        if e and g:
            row["events_total_over_gemm"] = e["total_ms"] / g["step_ms"]
        if part and g:
            row["neurons_over_gemm"] = part["neurons_fwd_bwd_ms"] / g["step_ms"]
        if e:
            row["encoding_share"] = e["encode_ms"] / e["total_ms"]
        if e and s:
            row["snntorch_over_events"] = s["total_ms"] / e["total_ms"]
        if (eb := by.get("events" + BF16)) and g:
            row["events_bf16_total_over_gemm"] = eb["total_ms"] / g["step_ms"]
        out.append(row)
    return out


def targets_table(rows: list[dict]) -> list[str]:
    lines = ["", "| device | T | ratio | measured | goal | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        for key, what, goals, kind in TARGETS:
            if key not in row:
                continue
            v, goal = row[key], goals.get(row["T"])
            ok = goal is not None and (v <= goal if kind == "max" else v >= goal)
            met = "-" if goal is None else ("yes" if ok else "no")
            want = "-" if goal is None else f"{'≤' if kind == 'max' else '≥'} {goal:g}"
            lines.append(f"| {row['device']} | {row['T']} | {what} | {v:.2f} | {want} | {met} |")
    return lines


def table(report: dict) -> str:
    lines = [
        "| device | T | engine | encode ms | step ms | total ms | total ms (min) "
        "| saved-for-backward MB | CUDA peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        lines.append(
            f"| {r['device']} | {r['T']} | {r['engine']} | {r['encode_ms']:.1f} | "
            f"{r['step_ms']:.1f} | {r['total_ms']:.1f} | {r['total_ms_min']:.1f} | "
            f"{r['saved_mb']:.0f} | {peak} |"
        )
    lines += [
        "",
        "| device | T | snnTorch / fused (with encoding) | snnTorch / fused (model only) | "
        "fused / GEMM floor | fused memory / snnTorch | data + encoding share |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for q in report["ratios"]:
        lines.append(
            f"| {q['device']} | {q['T']} | {fmt(q.get('speedup_total'), '.1f')}x | "
            f"{fmt(q.get('speedup_model'), '.1f')}x | {fmt(q.get('fused_over_gemm'), '.2f')}x | "
            f"{fmt(q.get('memory_ratio'), '.2f')} | {fmt(q.get('data_encoding_share'), '.1%')} |"
        )
    if any("events_over_gemm" in q for q in report["ratios"]):
        lines += [
            "",
            "| device | T | events / GEMM floor | snnTorch / events (with encoding) | "
            "fused / events (with encoding) | events memory / fused | data + encoding share |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in report["ratios"]:
            lines.append(
                f"| {q['device']} | {q['T']} | {fmt(q.get('events_over_gemm'), '.2f')}x | "
                f"{fmt(q.get('events_speedup_total'), '.1f')}x | "
                f"{fmt(q.get('events_speedup_over_fused'), '.2f')}x | "
                f"{fmt(q.get('events_memory_over_fused'), '.2f')} | "
                f"{fmt(q.get('events_data_encoding_share'), '.1%')} |"
            )
    if any(k.endswith("_bf16_total_over_gemm") for q in report["ratios"] for k in q):
        lines += [
            "",
            "| device | T | bf16-mixed, with encoding: events / fp32 GEMM floor | "
            "fused / fp32 floor | GEMM / fp32 floor | events fp32 / bf16 | fused fp32 / bf16 |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in report["ratios"]:
            cells = [f"{fmt(q.get(f'{n}_bf16_total_over_gemm'), '.2f')}x" for n in BF16_BASES]
            cells += [f"{fmt(q.get(f'{n}_bf16_speedup'), '.2f')}x" for n in BF16_BASES[:2]]
            lines.append(f"| {q['device']} | {q['T']} | " + " | ".join(cells) + " |")
    if report.get("parts"):
        lines += [
            "",
            "| device | T | layer-1 fwd dense / events ms | layer-1 weight grad dense / events "
            "ms | rate events (encoding) ms | neurons fwd+bwd ms | layers 2-3 fwd+bwd ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in report["parts"]:
            lines.append(
                f"| {p['device']} | {p['T']} | {p['l1_fwd_dense_ms']:.1f} / "
                f"{p['l1_fwd_events_ms']:.1f} | {p['l1_wgrad_dense_ms']:.1f} / "
                f"{p['l1_wgrad_events_ms']:.1f} | {p['encode_events_ms']:.1f} | "
                f"{p['neurons_fwd_bwd_ms']:.1f} | "
                f"{p['layers23_fwd_bwd_ms']:.1f} |"
            )
    if report.get("targets"):
        lines += targets_table(report["targets"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m snnbench.bench", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--steps", type=int, nargs="+", default=[25, 100], help="values of T")
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per case (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per case first")
    ap.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="devices to run on (default: cpu, plus cuda when available)",
    )
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time, or the process's CPU time (with --threads 1 on a shared machine)",
    )
    ap.add_argument(
        "--no-tune-allocator",
        action="store_true",
        help="leave glibc's malloc thresholds alone (see engine.tune_cpu_allocator)",
    )
    ap.add_argument("--json", default="bench_results/bench.json", help="output JSON path")
    args = ap.parse_args(argv)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for d in devices:
        if d.startswith("cuda") and not torch.cuda.is_available():
            print(f"snnbench.bench: error: --devices {d}: no CUDA device here", file=sys.stderr)
            return 2
    if min(args.steps) < 1 or args.repeats < 1 or args.batch_size < 1 or args.warmup < 0:
        print(
            "snnbench.bench: error: --steps, --repeats, --batch-size must be >= 1 and "
            "--warmup >= 0",
            file=sys.stderr,
        )
        return 2
    if args.batch_size * (args.warmup + 1) > 55000:
        print(
            f"snnbench.bench: error: --batch-size {args.batch_size} x (--warmup + 1) must fit "
            "in the 55000 training images",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCKS[args.clock]
    allocator_tuned = False if args.no_tune_allocator else tune_cpu_allocator()
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    try:
        report = run_bench(
            args.steps, args.repeats, devices, args.batch_size, args.engines, args.warmup
        )
    except data_mod.DataError as exc:
        print(f"snnbench.bench: error: {exc}", file=sys.stderr)
        return 2
    report["machine"] = machine()
    report["machine"]["load_avg_at_start"] = load_at_start
    report["settings"] = {
        "sizes": SIZES,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "steps": args.steps,
        "cpu_allocator_tuned": allocator_tuned,
        "clock": args.clock,
        "command": " ".join(["python -m snnbench.bench", *(argv or sys.argv[1:])]),
    }
    print(table(report))
    m = report["machine"]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    m["load_avg_at_end"] = load
    print(
        f"\nmachine: {m['cpu']}, {m['logical_cpus']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads), cuda: {m['cuda']}; load average at start "
        f"{m['load_avg_at_start']}, at end {load}"
    )
    out = Path(args.json)
    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
