"""NIR export: the exported graph, imported by snnTorch and by Norse, gives the same hidden and
output spikes as our model on encoded test digits; what NIR cannot express is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg
from omegaconf import OmegaConf

from snnbench.dataio.datasets import load_dataset
from snnbench.dataio.inputs import Batcher
from snnbench.run.export import (
    DT,
    build_run_model,
    export_run,
    fold_r_into_threshold,
    load_run_config,
)
from snnbench.run.export import main as export_main
from snnbench.run.training import run

nir = pytest.importorskip("nir", reason='needs the nir extra (".[nir]")')
pytest.importorskip("nirtorch", reason='needs the nir extra (".[nir]")')

TRAIN = [
    "dataset.train_subset=1024",
    "dataset.eval_subset=200",
    "dataset.download=false",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.device=cpu",
    "spiking.enabled=false",
    "optimizer.lr=2e-3",
]
#: a temporal SNN NIR can express: leaky neurons reset to zero, learnt per-layer betas
TEMPORAL = [
    "model=temporal",
    "model.num_steps=8",
    "neuron.reset=zero",
    "neuron.beta=0.8",
    "neuron.threshold=0.5",
    "neuron.learn_beta=true",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("nir") / "run"
    run(compose_cfg([*TRAIN, *TEMPORAL], run_dir))
    return run_dir


def _our_spikes(run_dir: Path, n: int = 32) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Encoded test digits ``[T, n, 784]`` and our model's spikes per layer ``[T, n, N]``."""
    cfg = load_run_config(run_dir)
    model = build_run_model(cfg, run_dir)
    splits = load_dataset(cfg.dataset)
    x = Batcher(cfg)(splits.test.images[:n], torch.Generator().manual_seed(0))
    if not isinstance(x, torch.Tensor):  # event input (layer 1 on CPU): the same spikes
        x = x.to_dense()
    x = x.flatten(2)  # [T, n, 1, 28, 28] images -> [T, n, 784]
    with torch.no_grad():
        out = model(x)
    for layer in out.spikes:  # a test with silent layers would prove little
        assert layer.sum() > 0
    return x, out.spikes


def _step(net: torch.nn.Module, x: torch.Tensor, lif_type: type) -> list[torch.Tensor]:
    """Run an imported one-step graph over ``x[t]`` (zero state first); the spikes of each
    ``lif_type`` module, in graph order, as ``[T, B, N]``."""
    lifs = [m for m in net.modules() if isinstance(m, lif_type)]
    recs: list[list[torch.Tensor]] = [[] for _ in lifs]
    for rec, lif in zip(recs, lifs):
        lif.register_forward_hook(
            lambda mod, inp, out, rec=rec: rec.append(
                (out[0] if isinstance(out, tuple) else out).detach().float()
            )
        )
    state = None
    with torch.no_grad():
        for t in range(x.shape[0]):
            _, state = net(x[t], state)
    return [torch.stack(r) for r in recs]


def test_graph_carries_weights_and_neuron_parameters(trained):
    out = export_run(trained)
    assert out == trained / "model.nir"
    graph = nir.read(str(out))
    cfg = load_run_config(trained)
    model = build_run_model(cfg, trained)
    assert set(graph.nodes) == {"input", "fc1", "lif1", "fc2", "lif2", "fc3", "lif3", "output"}
    chain = ["input", "fc1", "lif1", "fc2", "lif2", "fc3", "lif3", "output"]
    assert sorted(graph.edges) == sorted(zip(chain[:-1], chain[1:]))
    for i, (fc, beta) in enumerate(zip(model.fcs, model.layer_betas()), start=1):
        affine, lif = graph.nodes[f"fc{i}"], graph.nodes[f"lif{i}"]
        assert torch.equal(torch.from_numpy(affine.weight), fc.weight.detach())
        assert torch.equal(torch.from_numpy(affine.bias), fc.bias.detach())
        b = float(beta.detach())
        assert lif.tau == pytest.approx(DT / (1 - b), rel=1e-12)
        assert lif.r == pytest.approx(1 / (1 - b), rel=1e-12)
        assert (lif.v_threshold == 0.5).all() and (lif.v_reset == 0).all()
        assert (lif.v_leak == 0).all()
    betas = [float(b.detach()) for b in model.layer_betas()]
    assert len(set(betas)) == 3  # learn_beta gave each layer its own beta
    meta = graph.metadata
    assert float(meta["dt"]) == DT and int(meta["num_steps"]) == 8
    assert "mean_mem" in str(meta["readout"])
    assert json.loads(meta["encoding"])["name"] == "rate"


def test_snntorch_import_gives_our_spikes(trained):
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    x, ours = _our_spikes(trained)
    net = import_from_nir(nir.read(str(export_run(trained))))
    theirs = _step(net, x, snn.Leaky)
    assert len(theirs) == len(ours) == 3
    for layer, (a, b) in enumerate(zip(theirs, ours), start=1):
        assert torch.equal(a, b), f"layer {layer}: {(a != b).sum().item()} spikes differ"


def test_norse_import_gives_our_spikes(trained):
    norse = pytest.importorskip("norse.torch", reason="needs norse (in the dev extra)")
    from norse.torch.module.lif_box import LIFBoxCell

    x, ours = _our_spikes(trained)
    graph = nir.read(str(export_run(trained)))
    # Norse 1.1 ignores a LIF's r and defaults to dt=1e-3: fold r into the threshold, pass dt
    net = norse.from_nir(fold_r_into_threshold(graph), dt=float(graph.metadata["dt"]))
    theirs = _step(net, x, LIFBoxCell)
    assert len(theirs) == 3
    for layer, (a, b) in enumerate(zip(theirs, ours), start=1):
        assert torch.equal(a, b), f"layer {layer}: {(a != b).sum().item()} spikes differ"


def test_single_step_snn_exports_with_any_reset(tmp_path):
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    run_dir = tmp_path / "run"
    run(compose_cfg([*TRAIN, "model=single_step", "neuron.threshold=0.25"], run_dir))
    assert load_run_config(run_dir).neuron.reset == "subtract"  # irrelevant at T=1
    x, ours = _our_spikes(run_dir)
    theirs = _step(import_from_nir(nir.read(str(export_run(run_dir)))), x, snn.Leaky)
    for a, b in zip(theirs, ours):
        assert torch.equal(a, b)


def _config_only_run(tmp_path: Path, *overrides: str) -> Path:
    """A run dir whose metrics.json holds the composed config (enough for a refusal)."""
    run_dir = tmp_path / "run"
    cfg = compose_cfg(list(overrides), run_dir)
    run_dir.mkdir()
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "metrics.json").write_text(json.dumps({"config": cfg_dict}))
    return run_dir


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=ann"], "model=ann is not a spiking network"),
        (["neuron.reset=subtract"], "neuron.reset=subtract cannot be exported faithfully"),
        (["neuron.reset=none"], "neuron.reset=none cannot be exported faithfully"),
        (["neuron=synaptic", "neuron.reset=zero"], "neuron=synaptic cannot be exported"),
    ],
)
def test_refuses_what_nir_cannot_express(tmp_path, capsys, overrides, message):
    run_dir = _config_only_run(tmp_path, *overrides)
    assert export_main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"snnbench.export: error: {message}") and err.count("\n") == 1
    assert not (run_dir / "model.nir").exists()


def test_refuses_unknown_runs(tmp_path, capsys):
    assert export_main([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert export_main([str(tmp_path)]) == 2
    assert "is not a snnbench run" in capsys.readouterr().err
    run_dir = _config_only_run(tmp_path, "neuron.reset=zero")  # config, but no weights
    assert export_main([str(run_dir)]) == 2
    assert "best_model.pt does not exist" in capsys.readouterr().err


def test_command_line_writes_the_file(trained, tmp_path):
    out = tmp_path / "sub" / "net.nir"
    proc = subprocess.run(
        [sys.executable, "-m", "snnbench.export", str(trained), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert set(nir.read(str(out)).nodes) >= {"input", "fc1", "lif3", "output"}
