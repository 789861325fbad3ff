"""Models are objects named by ``_target_``: built-in YAMLs, arguments the harness passes,
old records' configs, and one-line errors for a target that cannot be imported or built."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from snnbench.config import ConfigError
from snnbench.networks.contract import Neuron, build_model
from snnbench.networks.mlp import ANN, SpikingMLP

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "option,cls", [("ann", ANN), ("single_step", SpikingMLP), ("temporal", SpikingMLP)]
)
def test_builtin_model_yamls_name_their_target(make_cfg, option, cls):
    cfg = make_cfg(f"model={option}")
    assert cfg.model._target_.startswith("snnbench.models.") and cfg.model.name == option
    model = build_model(cfg)
    assert type(model) is cls
    assert model.fcs[0].in_features == 784 and model.fcs[-1].out_features == 10


def test_old_record_config_without_target_builds_the_same_model(make_cfg):
    cfg = make_cfg("model=temporal", "model.hidden=[7]")
    old = OmegaConf.create(OmegaConf.to_container(cfg))
    del old.model["_target_"]
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(0)
    b = build_model(old)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture
def user_pkg(tmp_path, monkeypatch) -> str:
    """A module ``usernets`` outside the package, on sys.path."""
    (tmp_path / "usernets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self, width, input_shape, num_classes, neuron, gain=1.0):
                    super().__init__()
                    self.seen = (tuple(input_shape), num_classes, neuron, gain)
                    self.fc = nn.Linear(input_shape[-1] * input_shape[-2], num_classes)

                def forward(self, x):
                    return self.fc(x.flatten(-3)).mean(0)

            def not_a_module(width):
                return width
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "usernets"


def test_harness_passes_shape_classes_and_neuron_the_signature_names(make_cfg, user_pkg):
    cfg = make_cfg("model=temporal", "neuron=synaptic", "neuron.beta=0.7")
    cfg.model = OmegaConf.create(
        {"_target_": f"{user_pkg}.Net", "name": "mine", "num_steps": 3, "lr": 1e-3, "width": 5}
    )
    model = build_model(cfg, (1, 6, 4), 3)
    shape, classes, neuron, gain = model.seen
    assert (shape, classes, gain) == ((1, 6, 4), 3, 1.0)
    assert isinstance(neuron, Neuron) and neuron.kind == "synaptic"
    assert neuron.params.beta == 0.7 and neuron.params.surrogate_slope == 2.0
    assert model(torch.zeros(3, 2, 1, 6, 4)).shape == (2, 3)


@pytest.mark.parametrize(
    "target,extra,reason",
    [
        ("nowhere_at_all.Net", {}, "cannot be imported (ModuleNotFoundError"),
        ("usernets.Missing", {}, "cannot be imported (AttributeError"),
        ("usernets.Net", {"widht": 3}, "could not be built (TypeError"),
        ("usernets.not_a_module", {"width": 3}, "built a int, not a torch.nn.Module"),
    ],
)
def test_a_target_that_cannot_be_built_is_one_line(make_cfg, user_pkg, target, extra, reason):
    cfg = make_cfg()
    cfg.model = OmegaConf.create(
        {"_target_": target, "name": "x", "num_steps": 2, "lr": 0.1, **extra}
    )
    with pytest.raises(ConfigError) as err:
        build_model(cfg)
    msg = str(err.value)
    assert msg.startswith(f"model._target_={target!r}") and reason in msg and "\n" not in msg


@pytest.mark.parametrize(
    "override", ["model._target_=nowhere_at_all.Net", "+model.bogus=1", "model._target_="]
)
def test_cli_bad_target_stops_before_any_data_loads(tmp_path, override):
    """No data anywhere: the model's error comes first (exit 2, one line, no run dir)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("SNNBENCH_DATA", None)
    res = subprocess.run(
        [sys.executable, "-m", "snnbench", override, "dataset.download=false"]
        + [f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snnbench: error: model.")
    assert "_target_" in lines[0] and "mnist" not in lines[0]
    assert not (tmp_path / "run").exists()


def test_checkpoint_from_before_models_were_objects_still_resumes(make_cfg, tmp_path):
    from snnbench.run import checkpoint as ckpt

    cfg = make_cfg("model=ann")
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["model"]["_target_"], old["dataset"]["_target_"]
    old["model"].update(readout="mean_mem", engine="fused")  # the old schema gave the ANN these
    ckpt.check_same_config({"config": ckpt.comparable(OmegaConf.create(old))}, cfg, tmp_path)
    old["model"]["hidden"] = [5]  # a real difference is still refused
    with pytest.raises(ConfigError, match="differs in model.hidden\\)"):
        ckpt.check_same_config({"config": ckpt.comparable(OmegaConf.create(old))}, cfg, tmp_path)


@pytest.mark.parametrize("option", ["ann", "conv_ann"])
def test_non_spiking_models_ignore_a_swept_num_steps(make_cfg, option):
    """A sweep over model.num_steps may include the ANNs: they stay non-spiking."""
    from snnbench.config import is_spiking
    from snnbench.dataio.inputs import Batcher

    cfg = make_cfg(f"model={option}", "model.num_steps=15")
    assert not is_spiking(cfg)
    x = Batcher(cfg)(torch.zeros(2, 28, 28, dtype=torch.uint8), None)
    assert x.shape == (2, 1, 28, 28) and build_model(cfg)(x).shape == (2, 10)
