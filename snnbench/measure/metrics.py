"""Spiking metrics (NeuroBench conventions): firing rates, sparsity, synaptic operations,
an energy estimate, footprint and the accuracy-latency curve.

The functions at the top are pure (explicit tensors in, numbers out); :func:`spiking_metrics`
runs one pass over a data split and returns the ``"spiking"`` section of ``metrics.json``.

Conventions (see README "Spiking metrics"):

* synaptic operations of a Linear layer = the number of (nonzero input x nonzero weight)
  pairs, summed over time steps and averaged over samples; biases are not counted. They are
  ACs (accumulates) when every input value is in {-1, 0, 1}, else MACs. "Dense" operations
  count every pair (``in * out`` per step).
* energy (pJ) = ACs * ac_pj + MACs * mac_pj; memory access and neuron updates are ignored.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from snnbench.config import is_spiking
from snnbench.dataio import data as data_mod
from snnbench.maths.synops import LayerOps
from snnbench.networks.mlp import ANN, SpikingMLP

# ---------------------------------------------------------------------------- pure counts


def firing_rate(spikes: torch.Tensor) -> float:
    """Mean spikes per neuron per step of a spike tensor ``[T, B, N]`` (any shape works)."""
    return float(spikes.float().mean()) if spikes.numel() else 0.0


def activation_sparsity(x: torch.Tensor) -> float:
    """Fraction of zero entries of an activation tensor (spikes ``[T, B, N]`` or ``[B, N]``)."""
    return float((x == 0).sum()) / x.numel() if x.numel() else 0.0


def energy_pj(acs: float, macs: float, ac_pj: float, mac_pj: float) -> float:
    """Energy estimate in picojoules: ``acs * ac_pj + macs * mac_pj``."""
    return acs * ac_pj + macs * mac_pj


def parameter_count(model: nn.Module) -> int:
    """All parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def footprint_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (NeuroBench's footprint).

    A spiking MLP counts its weights, biases and one decay (beta) per layer, whatever the
    engine: snnTorch's neurons also hold constants and the last batch's membranes as
    buffers, which are execution state, not model (left out for any model).
    """
    if isinstance(model, SpikingMLP):
        tensors = [*model.fcs.parameters(), *model.layer_betas()]
    else:
        tensors = [*model.parameters()]
        for module in model.modules():
            state = _NEURON_STATE if type(module).__module__.startswith("snntorch") else ()
            tensors += [b for name, b in module.named_buffers(recurse=False) if name not in state]
    return sum(t.numel() * t.element_size() for t in tensors)


#: Buffers of snnTorch neurons that hold execution state or constants, not model.
_NEURON_STATE = ("mem", "syn", "spk", "graded_spikes_factor", "reset_mechanism_val")


def connection_sparsity(weights: list[torch.Tensor]) -> float:
    """Fraction of zero entries over the given weight matrices (biases excluded)."""
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0


def cumulative_predictions(
    mem_out: torch.Tensor, spikes_out: torch.Tensor, readout: str
) -> torch.Tensor:
    """Class predictions ``[T, B]`` when the readout is cut after step t = 1..T.

    mean_mem: argmax of the output membrane ``[T, B, C]`` averaged over steps 1..t;
    spike_count: argmax of the output spikes ``[T, B, C]`` counted over steps 1..t. (The mean
    and the sum over 1..t have the same argmax, so the cumulative sum is used for both.)
    """
    if readout == "mean_mem":
        seq = mem_out
    elif readout == "spike_count":
        seq = spikes_out
    else:
        raise ValueError(f"model.readout={readout!r} is not known")
    return seq.cumsum(0).argmax(-1)


def latency_accuracy(preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number correct at each cut: preds ``[T, B]``, labels ``[B]`` -> ``[T]`` (int64)."""
    return (preds == labels.unsqueeze(0)).sum(1)


def settle_steps(preds: torch.Tensor) -> torch.Tensor:
    """First step (1-based) from which each sample's prediction no longer changes.

    preds: ``[T, B]`` predictions after steps 1..T -> ``[B]`` int64 in 1..T (T when the
    prediction changes at the last step, 1 when it never changes).
    """
    T = preds.shape[0]
    differs = preds != preds[-1:]  # [T, B]: differs from the final prediction
    steps = torch.arange(1, T + 1, device=preds.device).unsqueeze(1)  # 1-based
    last_differs = (differs * steps).amax(0)  # 0 where it never differs
    return last_differs + 1


# ---------------------------------------------------------------------------- the driver


def _layer_name(model: nn.Module, index: int, name: str) -> str:
    """The study's MLPs keep their record names fc1, fc2, ...; other models their module path."""
    return f"fc{index + 1}" if isinstance(model, (ANN, SpikingMLP)) else name


def _layer_shape(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, nn.Conv2d):
        return {
            "kind": "Conv2d",
            "in_features": module.in_channels,
            "out_features": module.out_channels,
            "kernel_size": list(module.kernel_size),
        }
    return {
        "kind": "Linear",
        "in_features": module.in_features,
        "out_features": module.out_features,
    }


def spiking_metrics(
    model: nn.Module,
    split: data_mod.Split,
    batcher: Any,
    cfg: DictConfig,
    seed: int,
) -> dict[str, Any]:
    """One pass over ``split`` -> the ``"spiking"`` record (see README "Spiking metrics").

    Any model: forward hooks (:mod:`snnbench.networks.hooks`) count the synaptic operations of every
    ``nn.Linear`` and ``nn.Conv2d`` and the spikes of every spiking layer; spikes returned by
    the model (``out.spikes``, see :mod:`snnbench.networks.contract`) take the place of the hooked
    ones. The pass walks ``data.batches(split, cfg.trainer.eval_batch_size)`` in order and
    encodes with a generator seeded ``seed``, in eval mode without gradients — exactly as
    :func:`snnbench.measure.evaluation.evaluate` — so with the same weights the spikes are the same
    and the latency curve's last point equals that evaluation's accuracy. Work a model skips
    (a layer applied once under direct coding, spike events) is counted per step as if done
    (see :mod:`snnbench.networks.hooks`). ``cfg.spiking`` gives the per-operation costs (pJ) and an
    optional sample cap.
    """
    from snnbench.networks.hooks import Recorder

    t0 = time.perf_counter()
    sp = cfg.spiking
    spiking = is_spiking(cfg)
    device = split.images.device
    cap = len(split) if sp.max_samples is None else min(int(sp.max_samples), len(split))

    # spikes the model returns (out.spikes), per layer: sum, zeros, values
    out_spikes: list[list[float]] = []
    num_steps = 1
    readout = getattr(model, "readout", None)
    correct_t: torch.Tensor | None = None
    settle_sum = torch.zeros((), dtype=torch.long, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    n = 0

    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    recorder = Recorder(model, check_spikes=spiking)
    try:
        with torch.no_grad():
            for images, labels in data_mod.batches(split, cfg.trainer.eval_batch_size):
                if n >= cap:
                    break
                x = batcher(images, gen)  # encode the whole batch: same draws as evaluate
                k = min(len(labels), cap - n)
                if k < len(labels):
                    x = x[:k] if not spiking else x[:, :k]
                    labels = labels[:k]
                out = model(x)
                logits = out if isinstance(out, torch.Tensor) else out.logits
                n += len(labels)
                spikes = None if isinstance(out, torch.Tensor) else getattr(out, "spikes", None)
                mem_out = None if isinstance(out, torch.Tensor) else getattr(out, "mem_out", None)
                if spikes:
                    if not out_spikes:
                        out_spikes = [[0.0, 0, 0] for _ in spikes]
                    for acc, s in zip(out_spikes, spikes):
                        acc[0] += float(s.sum(dtype=torch.float64))
                        acc[1] += s.numel() - int(torch.count_nonzero(s))
                        acc[2] += s.numel()
                if spiking:
                    num_steps = int(cfg.model.num_steps)
                curve = readout == "mean_mem" or (readout == "spike_count" and spikes)
                if spiking and mem_out is not None and curve:
                    num_steps = mem_out.shape[0]
                    preds = cumulative_predictions(mem_out, spikes[-1], readout)
                    preds[-1] = logits.argmax(1)  # the model's own readout at t = T
                    c = latency_accuracy(preds, labels)
                    correct_t = c if correct_t is None else correct_t + c
                    settle_sum += settle_steps(preds).sum()
                correct += (logits.argmax(1) == labels).sum()
    finally:
        recorder.remove()
        model.train(was_training)

    n = max(n, 1)
    mac_pj, ac_pj = float(sp.mac_pj), float(sp.ac_pj)
    # spiking layers: the model's own record when it returns one, else the hooked layers
    if out_spikes:
        fired = [(f"lif{i + 1}", s, z, v) for i, (s, z, v) in enumerate(out_spikes)]
    else:
        fired = [(r.name, r.spikes, r.zeros, r.values) for r in recorder.spiking]
    syn = recorder.synaptic
    attach = spiking and len(fired) == len(syn)  # layer i's neurons follow synaptic layer i
    layers: list[dict[str, Any]] = []
    acs = macs = dense_total = dense_energy = 0.0
    for i, layer in enumerate(syn):
        ops = layer.ops or LayerOps(0, 0, False, 0, 0)  # no sample seen
        op = ops.op if spiking else "MAC"
        synops, dense = ops.synops / n, ops.dense / n
        if op == "AC":
            acs += synops
        else:
            macs += synops
        dense_total += dense
        dense_energy += dense * (ac_pj if op == "AC" else mac_pj)
        rate = sparsity = None
        if attach:
            _, s, z, v = fired[i]
            rate, sparsity = (s / v, z / v) if v else (0.0, 0.0)
        elif not spiking and i + 1 < len(syn) and syn[i + 1].ops is not None:
            nxt = syn[i + 1].ops  # a non-spiking model: the zeros the next layer is fed
            sparsity = nxt.zeros / nxt.values if nxt.values else None
        layers.append(
            {
                "name": _layer_name(model, i, layer.name),
                "module": layer.name,
                **_layer_shape(layer.module),
                "op": op,
                "synops_per_sample": synops,
                "dense_ops_per_sample": dense,
                "firing_rate": rate,
                "activation_sparsity": sparsity,
                "input_sparsity": ops.zeros / ops.values if ops.values else None,
            }
        )
    if spiking:
        measured = [(z, v) for _, _, z, v in fired if v]
        updates = sum(v for _, _, _, v in fired) / n
    else:
        measured = [(L.ops.zeros, L.ops.values) for L in syn[1:] if L.ops and L.ops.values]
        updates = sum(L.outputs for L in syn) / n
    weights = [L.module.weight.detach() for L in syn]
    result: dict[str, Any] = {
        "n_samples": n,
        "num_steps": num_steps if spiking else None,
        "readout": readout if spiking else None,
        "layers": layers,
        "spiking_layers": [
            {
                "name": name,
                "neurons": v / n / num_steps,
                "firing_rate": s / v if v else 0.0,
                "activation_sparsity": z / v if v else 0.0,
            }
            for name, s, z, v in (fired if spiking else [])
        ],
        "acs_per_sample": acs,
        "macs_per_sample": macs,
        "synops_per_sample": acs + macs,
        "dense_ops_per_sample": dense_total,
        "neuron_updates_per_sample": float(updates),
        "activation_sparsity": (
            sum(z for z, _ in measured) / sum(v for _, v in measured) if measured else None
        ),
        "energy_per_inference_uj": energy_pj(acs, macs, ac_pj, mac_pj) / 1e6,
        "energy_dense_per_inference_uj": dense_energy / 1e6,
        "energy_model": {"mac_pj": mac_pj, "ac_pj": ac_pj},
        "n_params": parameter_count(model),
        "footprint_bytes": footprint_bytes(model),
        "connection_sparsity": connection_sparsity(weights),
        "accuracy": correct.item() / n,
        "latency_curve": None,
        "settle_step_mean": None,
    }
    if spiking and correct_t is not None:
        result["latency_curve"] = [c / n for c in correct_t.tolist()]
        result["settle_step_mean"] = settle_sum.item() / n
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result["time_s"] = time.perf_counter() - t0
    return result
