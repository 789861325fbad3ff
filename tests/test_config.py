"""Every option of every config group composes and builds; bad values fail with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snnbench.config import ConfigError, validate
from snnbench.dataio.datasets import dataset_shape, gives_frames
from snnbench.dataio.inputs import Batcher
from snnbench.networks.contract import build_model
from snnbench.run.optim import build_optimizer
from tests.conftest import ROOT

GROUPS = [
    "model",
    "encoding",
    "neuron",
    "optimizer",
    "dataset",
    "trainer",
    "spiking",
    "experiment",
    "debug",
    "hparams_search",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


ALL_OPTIONS = [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_builds(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    validate(cfg)
    model = build_model(cfg)
    build_optimizer(cfg, model)
    shape = dataset_shape(cfg.dataset)[0]

    def images(steps: int | None) -> torch.Tensor:  # MNIST images, or event frames [B, T, ...]
        if not gives_frames(cfg.dataset):
            return torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
        return torch.randint(0, 4, (3, *([steps] if steps else []), *shape), dtype=torch.uint8)

    batcher = Batcher(cfg)
    x = batcher(images(cfg.model.num_steps), torch.Generator().manual_seed(0))
    if cfg.model.num_steps is None:
        assert x.shape == (3, *shape)
    else:
        assert x.shape == (cfg.model.num_steps, 3, *shape) or batcher.events
        cfg_small = make_cfg(f"{group}={option}", "model.num_steps=3")
        x = Batcher(cfg_small)(images(3), torch.Generator().manual_seed(0))
        model = build_model(cfg_small)
    out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    assert logits.shape == (3, 10)


def test_defaults_are_the_study_model(make_cfg):
    cfg = make_cfg(tiny=False)
    assert cfg.model.name == "temporal" and cfg.model.num_steps == 100
    assert cfg.encoding.name == "rate" and cfg.neuron.name == "leaky"
    assert cfg.neuron.beta == 0.9 and cfg.trainer.epochs == 10
    assert cfg.optimizer.lr == pytest.approx(1e-4) and cfg.trainer.batch_size == 128
    assert "experiment" not in cfg and "hparams_search" not in cfg


@pytest.mark.parametrize("model,lr", [("ann", 1e-3), ("single_step", 1e-3), ("temporal", 1e-4)])
def test_model_sets_study_lr_unless_overridden(make_cfg, model, lr):
    assert make_cfg(f"model={model}").optimizer.lr == pytest.approx(lr)
    assert make_cfg(f"model={model}", "optimizer.lr=0.05").optimizer.lr == pytest.approx(0.05)
    assert make_cfg(f"model={model}", "optimizer=sgd").optimizer.lr == pytest.approx(lr)


def test_single_step_uses_direct_encoding_unless_chosen(make_cfg):
    assert make_cfg("model=single_step").encoding.name == "direct"
    assert make_cfg("model=single_step", "encoding=rate").encoding.name == "rate"


BAD = [
    ("neuron.beta=1.5", "neuron.beta"),
    ("neuron.beta=0", "neuron.beta"),
    ("neuron.threshold=0", "neuron.threshold"),
    ("neuron.threshold=-1", "neuron.threshold"),
    ("model.num_steps=0", "model.num_steps"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("dataset.train_subset=0", "dataset.train_subset"),
    ("dataset.val_size=0", "dataset.val_size"),
    ("trainer.device=tpu", "trainer.device"),
    ("model.readout=max", "model.readout"),
    ("model.engine=jax", "model.engine"),
    ("neuron.reset=soft", "neuron.reset"),
    ("neuron.surrogate=relu", "neuron.surrogate"),
    ("optimizer.scheduler=linear", "optimizer.scheduler"),
    ("optimized_metric=test_acc", "optimized_metric"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[b[0] for b in BAD])
def test_bad_values_raise_naming_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(override))
    message = str(err.value)
    assert key in message and "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="trainer.device='cuda'.*no CUDA GPU"):
        validate(make_cfg("trainer.device=cuda"))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "snnbench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "override",
    ["neuron.beta=2", "trainer.device=cuda:7", "optimizer.lr=0", "augment.shift=9",
     "trainer.label_smoothing=1"],
)  # fmt: skip
def test_cli_bad_input_one_line_no_output_left(tmp_path, override):
    res = _cli(override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snnbench: error: ")
    assert override.split("=")[0] in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "run").exists()


def test_cli_missing_data_names_the_file(tmp_path, no_data):
    res = _cli(
        "dataset.download=false",
        f"dataset.root={tmp_path / 'nothing'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert "train-images-idx3-ubyte" in res.stderr and "SNNBENCH_DATA" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_preset_can_set_top_level_keys(tmp_path):
    """`@package _global_` presets win over config.yaml's own keys (`_self_` first)."""
    from tests.conftest import compose_cfg

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "toplevel.yaml").write_text(
        "# @package _global_\noptimized_metric: final_val_acc\ntrainer:\n  epochs: 3\n"
    )
    cfg = compose_cfg(
        [f"hydra.searchpath=[file://{tmp_path}]", "experiment=toplevel"], tmp_path / "run"
    )
    assert cfg.optimized_metric == "final_val_acc" and cfg.trainer.epochs == 3
    assert compose_cfg([], tmp_path / "run").optimized_metric == "best_val_acc"


ENCODER_BAD = [
    (("encoding=latency", "encoding.threshold=0"), "encoding.threshold"),
    (("encoding=delta", "encoding.threshold=0"), "encoding.threshold"),
    (
        ("encoding=latency", "encoding.normalize=false", "model.num_steps=5", "encoding.tau=5"),
        "model.num_steps",
    ),
    (("encoding=latency", "encoding.normalize=false", "encoding.linear=false"), "model.num_steps"),
]


@pytest.mark.parametrize("overrides,key", ENCODER_BAD, ids=[" ".join(b[0]) for b in ENCODER_BAD])
def test_encoder_values_that_snntorch_would_reject_are_refused_up_front(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("model=temporal", "model.num_steps=25", *overrides))
    assert key in str(err.value) and "\n" not in str(err.value)


def test_unnormalised_latency_that_fits_in_T_is_accepted(make_cfg):
    """T=6 holds the latest spike (at step 5 = T - 1, that of the darkest pixel that spikes):
    accepted, and the encoder puts it on the last step; T=5 is refused (ENCODER_BAD)."""
    import torch

    from snnbench.maths.encoding import latency, latency_last_step

    cfg = make_cfg(
        "encoding=latency", "encoding.normalize=false", "encoding.tau=5", "model.num_steps=6"
    )
    validate(cfg)
    enc = cfg.encoding
    assert latency_last_step(enc.tau, enc.threshold, enc.linear) == 5
    pixels = torch.tensor([[[0, 3, 255]]], dtype=torch.uint8)  # below threshold, dark, white
    spikes = latency(pixels, 6, enc.tau, enc.threshold, enc.linear, normalize=False)
    assert spikes[:, 0, 0].tolist() == [0, 0, 0, 0, 0, 0]  # never
    assert spikes[:, 0, 1].tolist() == [0, 0, 0, 0, 0, 1]  # the last step
    assert spikes[:, 0, 2].tolist() == [1, 0, 0, 0, 0, 0]  # the first
