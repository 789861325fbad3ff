"""Export a run's best-validation SNN as a NIR graph: ``python -m snnbench.export RUN_DIR``.

NIR (the Neuromorphic Intermediate Representation) is the exchange format read by snnTorch,
Norse, Rockpool, Sinabs, Lava-DL, SpiNNaker2 and others. The graph is written with the
``nir`` package directly (``pip install -e ".[nir]"``)::

    input [784] -> fc1 (Affine) -> lif1 (LIF) -> fc2 (Affine) -> lif2 (LIF) -> ... -> output

One graph call is one time step; the encoded input (``[784]`` spikes or, with ``direct``
coding, the image) is fed at each of the run's T steps. Each LIF node is NIR's
``tau dv/dt = (v_leak - v) + r I``, fire when ``v > v_threshold``, then ``v = v_reset``, with
``tau = dt / (1 - beta)``, ``r = 1 / (1 - beta)``, ``v_leak = v_reset = 0`` and
``dt = 1e-4`` (:data:`DT`, the step snnTorch's importer assumes): its forward-Euler step is
``v[t] = beta v[t-1] + I[t]``, exactly the run's ``snn.Leaky``. That holds for what NIR can
express: ``neuron=leaky`` with ``neuron.reset=zero`` (snnTorch's zero reset, delayed one
step, gives the same spikes as NIR's immediate reset to 0) or any reset at T=1
(``model=single_step``: no step follows a spike), and ``beta < 1``. Everything
else is refused with one line: the subtract and no-reset mechanisms (NIR's LIF always
resets to ``v_reset``), ``neuron=synaptic`` (its zero reset also clears the step after a
spike, unlike NIR's CubaLIF), ``beta = 1`` (no leak), the ANN. The graph's output is the
last layer's spikes; the run's readout (``mean_mem``: the class whose membrane, before
each step's reset, has the largest mean over T; ``spike_count``: the most output spikes)
is stated in the graph's metadata, not as a node: a NIR ``LI`` node integrates without
the output layer's reset, so it would not reproduce the membrane the run read out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from snnbench.run.results import BEST_MODEL_FILE, METRICS_FILE

#: The time step written into the graph (seconds); snnTorch's NIR importer assumes 1e-4.
DT = 1e-4


class ExportError(ValueError):
    """The run cannot be exported (unknown run, or semantics NIR cannot express)."""


def load_run_config(run_dir: Path) -> DictConfig:
    """The run's resolved config: metrics.json's ``config``, else ``.hydra/config.yaml``."""
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        try:
            record = json.loads(metrics.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ExportError(f"{metrics} is not valid JSON ({exc})") from None
        if isinstance(record.get("config"), dict):
            return OmegaConf.create(record["config"])
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        cfg = OmegaConf.load(hydra_cfg)
        cfg.pop("run_dir", None)  # ${hydra:...} does not resolve outside a Hydra job
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    raise ExportError(
        f"{run_dir} is not a snnbench run: no {METRICS_FILE} with a config and no "
        ".hydra/config.yaml there"
    )


def check_exportable(cfg: DictConfig) -> None:
    """Raise :class:`ExportError` (one line) unless NIR expresses the run's neurons exactly."""
    from snnbench.networks.contract import model_target

    if model_target(cfg) != "snnbench.models.spiking_mlp":
        kind = "is not a spiking network" if cfg.model.num_steps is None else "is not an MLP"
        raise ExportError(
            f"model={cfg.model.name} {kind}; NIR export covers the spiking MLPs "
            "(model=temporal or single_step)"
        )
    if cfg.neuron.name != "leaky":
        differs = {
            "zero": "also zeroes the membrane on the step after a spike",
            "subtract": "subtracts the threshold",
            "none": "does not reset",
        }[cfg.neuron.reset]
        raise ExportError(
            f"neuron={cfg.neuron.name} cannot be exported faithfully: NIR's CubaLIF sets the "
            f"membrane to v_reset at a spike, snnTorch's Synaptic (reset={cfg.neuron.reset}) "
            f"{differs}; export neuron=leaky neuron.reset=zero runs"
        )
    if cfg.neuron.reset != "zero" and int(cfg.model.num_steps) > 1:  # T=1: no step resets
        raise ExportError(
            f"neuron.reset={cfg.neuron.reset} cannot be exported faithfully: NIR's LIF sets the "
            "membrane to v_reset when it spikes (a reset to zero); train with "
            "neuron.reset=zero to export"
        )


def build_run_model(cfg: DictConfig, run_dir: Path) -> torch.nn.Module:
    """The run's model with its best-validation weights (``best_model.pt``), on the CPU."""
    from snnbench.networks.contract import build_model

    path = Path(run_dir) / BEST_MODEL_FILE
    if not path.is_file():
        raise ExportError(f"{path} does not exist: the run has not finished an epoch")
    model = build_model(cfg)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def _lif_node(beta: float, threshold: float, n: int, layer: str) -> Any:
    import nir

    if not 0.0 <= beta < 1.0:
        raise ExportError(
            f"{layer}: beta={beta} (no leak) has no finite NIR LIF time constant; "
            "export runs with neuron.beta < 1"
        )
    ones = np.ones(n, dtype=np.float64)
    tau = DT / (1.0 - beta)
    return nir.LIF(
        tau=ones * tau,
        r=ones * (1.0 / (1.0 - beta)),
        v_leak=ones * 0.0,
        v_threshold=ones * float(threshold),
        v_reset=ones * 0.0,
    )


def to_nir(model: torch.nn.Module, cfg: DictConfig) -> Any:
    """The :class:`nir.NIRGraph` of a SpikingMLP with LIF neurons (see the module doc)."""
    import nir

    check_exportable(cfg)
    fcs = list(model.fcs)
    betas = [float(b.detach().clamp(0, 1)) for b in model.layer_betas()]
    threshold = float(cfg.neuron.threshold)
    nodes: dict[str, Any] = {
        "input": nir.Input(input_type={"input": np.array([fcs[0].in_features])}),
    }
    edges: list[tuple[str, str]] = []
    prev = "input"
    for i, (fc, beta) in enumerate(zip(fcs, betas), start=1):
        w = fc.weight.detach().cpu().numpy().astype(np.float32)
        b = fc.bias.detach().cpu().numpy().astype(np.float32)
        nodes[f"fc{i}"] = nir.Affine(weight=w, bias=b)
        nodes[f"lif{i}"] = _lif_node(beta, threshold, fc.out_features, f"fc{i}")
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["output"] = nir.Output(output_type={"output": np.array([fcs[-1].out_features])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_metadata(cfg, betas))


def graph_metadata(cfg: DictConfig, betas: list[float]) -> dict[str, Any]:
    """What the graph itself does not say: time step, T, encoding and readout."""
    readout = {
        "mean_mem": "class = argmax over output neurons of their membrane potential averaged "
        "over the T steps, each step's membrane taken before that step's reset",
        "spike_count": "class = argmax over output neurons of their spikes summed over T",
    }[cfg.model.readout]
    return {
        "producer": "snnbench",
        "dt": DT,
        "num_steps": int(cfg.model.num_steps),
        "readout": str(cfg.model.readout),
        "readout_rule": readout,
        "encoding": json.dumps(OmegaConf.to_container(cfg.encoding, resolve=True)),
        "input": "one graph call per time step; feed the encoded image at each of num_steps "
        "steps, starting from zero state",
        "neuron": "snnTorch Leaky, reset to zero: v[t] = beta v[t-1] + I[t], spike if "
        "v > v_threshold, then v = 0",
        "betas": json.dumps(betas),
        "threshold": float(cfg.neuron.threshold),
    }


def export_run(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write ``run_dir``'s best-validation SNN as a NIR file (default ``RUN_DIR/model.nir``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a directory")
    cfg = load_run_config(run_dir)
    check_exportable(cfg)  # before loading weights
    try:
        import nir
    except ImportError:
        raise ExportError('NIR export needs the nir package: pip install -e ".[nir]"') from None
    graph = to_nir(build_run_model(cfg, run_dir), cfg)
    out = Path(out) if out is not None else run_dir / "model.nir"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        nir.write(str(tmp), graph)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def fold_r_into_threshold(graph: Any) -> Any:
    """For importers that ignore a LIF's ``r`` (Norse 1.1): a copy of ``graph`` whose LIF
    nodes have ``r = 1`` and ``v_threshold / r``. The membrane is then ``v / r``, so spikes
    and the reset to 0 are unchanged (up to float rounding)."""
    import copy

    import nir

    out = copy.deepcopy(graph)
    for name, node in out.nodes.items():
        if isinstance(node, nir.LIF):
            out.nodes[name] = nir.LIF(
                tau=node.tau,
                r=np.ones_like(node.r),
                v_leak=node.v_leak,
                v_threshold=node.v_threshold / node.r,
                v_reset=node.v_reset / node.r,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m snnbench.export",
        description="Write a run's best-validation SNN as a NIR graph (.nir, HDF5).",
    )
    parser.add_argument("run_dir", help="a run directory (holds metrics.json and best_model.pt)")
    parser.add_argument("--out", default=None, help="output file (default RUN_DIR/model.nir)")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir, args.out)
    except ExportError as exc:
        print(f"snnbench.export: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
