"""Config schemas (dataclasses registered in Hydra's ConfigStore), value validation, and
where the YAML configs live (:func:`config_dir`).

Types and key names are checked by Hydra when a config is composed (each group's YAML
extends its ``<group>_schema``); ranges and choices are checked by :func:`validate`,
which raises :class:`ConfigError` with a one-line message naming the key.
"""

# NB: no ``from __future__ import annotations`` here: OmegaConf needs real type objects.
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from snnbench.maths.dropout import DROPOUT_MASKS
from snnbench.maths.events import SPIKE_ENCODINGS


class ConfigError(ValueError):
    """A composed config holds a value that is not allowed (message names the key)."""


@dataclass
class ModelConfig:
    """The keys the harness reads from the ``model`` group. Every other key of a model YAML
    is an argument of its ``_target_`` (the schema is open: see :func:`register_configs`)."""

    _target_: str = "snnbench.models.spiking_mlp"  # the model's class or factory
    name: str = "temporal"  # a label for records and analysis (ann | single_step | temporal ...)
    num_steps: int | None = 100  # T: the model is fed [T, B, ...]; null: [B, ...] (no time axis)
    event_input: str = "auto"  # auto | on | off: layer 1 fed spike events (CPU, fused MLP)
    lr: float = 1e-4  # the study's learning rate for this model (optimizer.lr's default)


@dataclass
class EncodingConfig:
    name: str = "rate"  # rate | latency | delta | direct
    gain: float = 1.0  # rate: spike probability = gain * pixel / 255
    tau: float = 5.0  # latency: RC time constant; ignored when normalize=true
    threshold: float = 0.01  # latency: pixels below fire never; delta: change needed
    linear: bool = True  # latency: linear (vs logarithmic) intensity -> time map
    normalize: bool = True  # latency: stretch spike times over the whole window


@dataclass
class NeuronConfig:
    name: str = "leaky"  # leaky | synaptic
    beta: float = 0.9  # membrane decay per step, in (0, 1]
    alpha: float = 0.9  # synaptic-current decay per step (synaptic only), in (0, 1]
    threshold: float = 1.0
    reset: str = "subtract"  # subtract | zero | none
    surrogate: str = "atan"  # atan | fast_sigmoid | sigmoid
    slope: float | None = None  # surrogate sharpness; None = snnTorch default
    learn_beta: bool = False


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam / adamw
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    scheduler: str = "none"  # none | cosine | step
    step_size: int = 3  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    min_lr: float = 0.0  # cosine: final learning rate


@dataclass
class DatasetConfig:
    """The ``dataset`` group: ``_target_`` names the dataset object (see
    :mod:`snnbench.dataio.datasets`); the split keys are the harness's, the others the object's
    arguments (the schema is open to more)."""

    _target_: str = "snnbench.datasets.IDXDataset"
    name: str = "mnist"  # a label; IDXDataset: mnist | fashion_mnist
    root: str | None = None  # None: $SNNBENCH_DATA, then the user's cache (data.cache_dir)
    download: bool = True
    val_size: int = 5000  # seeded hold-out from the training set
    split_seed: int = 0  # seed of the train/validation split (fixed across trainer.seed)
    train_subset: int | None = None  # first N training images after the split
    eval_subset: int | None = None  # first N validation and test images (quick runs)


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = False
    progress: bool = True
    num_threads: int | None = None  # torch intra-op threads; None = torch default
    test_every_epoch: bool = False  # also evaluate the test set after every epoch
    label_smoothing: float = 0.0  # of the training loss's targets, in [0, 1)
    precision: str = "32"  # 32 | bf16-mixed (dense matmuls in bfloat16, neurons in float32)


@dataclass
class SpikingConfig:
    enabled: bool = True  # compute the spiking metrics on the test set at the end of a run
    mac_pj: float = 4.6  # energy of one multiply-accumulate (pJ); 45 nm, Horowitz 2014
    ac_pj: float = 0.9  # energy of one accumulate (pJ)
    max_samples: int | None = None  # None = the whole test split; N = its first N images


#: Keys the built-in models gained after records and checkpoints were written, with the
#: value that means what the older runs did (a record or checkpoint without the key ran so);
#: ``dropout_mask`` only exists for the spiking models.
ADDED_MODEL_KEYS = {"dropout": 0.0, "dropout_mask": "sample"}
#: The ``model`` keys the harness reads; the others are passed to the model's ``_target_``.
MODEL_HARNESS_KEYS = ("_target_", "name", "num_steps", "event_input", "lr")
ENCODINGS = ("rate", "latency", "delta", "direct")
NEURONS = ("leaky", "synaptic")
RESETS = ("subtract", "zero", "none")
SURROGATES = ("atan", "fast_sigmoid", "sigmoid")
READOUTS = ("mean_mem", "spike_count")
ENGINES = ("fused", "snntorch")
EVENT_INPUT = ("auto", "on", "off")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
DATASETS = ("mnist", "fashion_mnist")  # the IDX datasets
IDX_DATASET = "snnbench.datasets.IDXDataset"
OPTIMIZED_METRICS = ("best_val_acc", "final_val_acc")  # what run() returns to a sweeper
PRECISIONS = ("32", "bf16-mixed")  # trainer.precision (Lightning's names)

_SCHEMAS = {
    "model": ModelConfig,
    "encoding": EncodingConfig,
    "neuron": NeuronConfig,
    "optimizer": OptimizerConfig,
    "dataset": DatasetConfig,
    "trainer": TrainerConfig,
    "spiking": SpikingConfig,
}


def flatten(d: Mapping[str, Any], prefix: str = "", lists_as_json: bool = False) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values, or become JSON strings
    (hashable, so runs can be grouped by them) with ``lists_as_json``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + ".", lists_as_json))
        elif lists_as_json and isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def register_configs() -> None:
    """Store each group's schema as the root config ``<group>_schema`` (idempotent).

    Group YAMLs extend it with ``- /<group>_schema@_here_`` in their defaults list.
    The model and dataset schemas type the harness's keys but stay open to the object's own
    arguments.
    """
    cs = ConfigStore.instance()
    for group, schema in _SCHEMAS.items():
        node = OmegaConf.structured(schema)
        if group in ("model", "dataset"):
            OmegaConf.set_struct(node, False)
        cs.store(name=f"{group}_schema", node=node, provider="snnbench")


#: Built-in models without a time axis: they ignore ``model.num_steps`` (a sweep may set it).
NON_SPIKING_TARGETS = ("snnbench.models.ann_mlp", "snnbench.models.ANN", "snnbench.conv.ConvANN")


def is_spiking(cfg: DictConfig | Mapping[str, Any]) -> bool:
    """Whether the model is fed a time axis: the encoding, neuron and spiking counts apply.
    ``model.num_steps: null`` means a non-spiking model; the built-in non-spiking models
    (the ANNs; an old record's ``name: ann``) are non-spiking whatever ``num_steps`` says."""
    m = cfg["model"]
    target = m.get("_target_")
    if target in NON_SPIKING_TARGETS or (target is None and m.get("name") == "ann"):
        return False
    return m.get("num_steps") is not None


#: The fused spiking MLP: the only model that takes spike events as input.
EVENT_MODEL_TARGETS = ("snnbench.models.spiking_mlp", "snnbench.models.SpikingMLP")


def takes_events(cfg: DictConfig) -> bool:
    """Whether the model can be fed :class:`~snnbench.maths.events.SpikeEvents` (the fused MLP).
    A config without ``_target_`` (a record from before models were objects) is an MLP."""
    m = cfg.model
    target = m.get("_target_")
    mlp = target in EVENT_MODEL_TARGETS or (target is None and m.get("name") != "ann")
    return is_spiking(cfg) and mlp and m.get("engine", "fused") == "fused"


def _ours(cfg: DictConfig) -> bool:
    """Whether the model is one of snnbench's (whose arguments :func:`validate` checks)."""
    return str(cfg.model.get("_target_") or "snnbench.").startswith("snnbench.")


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = _get(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _check(cfg: DictConfig, key: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={_get(cfg, key)!r} is not allowed; it must be {allowed}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_encoder(cfg: DictConfig) -> None:
    """What the latency and delta codes need beyond the ranges (as ``snntorch.spikegen``)."""
    e, steps = cfg.encoding, int(cfg.model.num_steps)
    if e.name in ("latency", "delta"):
        # latency: snnTorch refuses 0; delta: at 0 every pixel would fire at every step
        _check(cfg, "encoding.threshold", e.threshold > 0, f"in (0, 1) for encoding={e.name}")
    if e.name == "latency" and not e.normalize:
        from snnbench.maths.encoding import latency_last_step

        last = latency_last_step(e.tau, e.threshold, e.linear)
        if last > steps - 1:
            raise ConfigError(
                f"model.num_steps={steps} is too small for encoding=latency with "
                f"normalize=false, tau={e.tau}, threshold={e.threshold}: the latest spike "
                f"falls on step {last}; use model.num_steps>={last + 1}, a smaller "
                "encoding.tau, or encoding.normalize=true"
            )


def validate(cfg: DictConfig) -> None:
    """Check ranges and choices of a composed config; raise ConfigError on the first bad key."""
    m, n, e, o, d, t = cfg.model, cfg.neuron, cfg.encoding, cfg.optimizer, cfg.dataset, cfg.trainer
    _check(cfg, "model.name", isinstance(m.name, str) and m.name.strip() != "", "a non-empty label")
    _check(
        cfg,
        "model._target_",
        isinstance(m.get("_target_"), str) and m._target_.strip() != "",
        "the import path of the model's class or factory (e.g. mypkg.nets.MyNet)",
    )
    if _ours(cfg) and "hidden" in m:
        _check(
            cfg,
            "model.hidden",
            len(m.hidden) >= 1 and all(h >= 1 for h in m.hidden),
            "a non-empty list of layer sizes >= 1",
        )
    _check(cfg, "model.lr", _finite(m.lr) and m.lr > 0, "a number > 0")
    if _ours(cfg) and "dropout" in m:
        _check(cfg, "model.dropout", _finite(m.dropout) and 0 <= m.dropout < 1, "in [0, 1)")
    if _ours(cfg) and "dropout_mask" in m:
        _choice(cfg, "model.dropout_mask", DROPOUT_MASKS)
        _check(
            cfg,
            "model.dropout_mask",
            is_spiking(cfg),
            "left out for a model without time steps (its dropout has no T to share a mask over)",
        )
    if is_spiking(cfg):
        _check(
            cfg,
            "model.num_steps",
            m.num_steps >= 1,
            "an integer >= 1 (the number of time steps T), or null for a non-spiking model",
        )
        if _ours(cfg) and "readout" in m:
            _choice(cfg, "model.readout", READOUTS)
        if _ours(cfg) and "engine" in m:
            _choice(cfg, "model.engine", ENGINES)
        _choice(cfg, "encoding.name", ENCODINGS)
        _check(cfg, "encoding.gain", _finite(e.gain) and 0 < e.gain <= 1, "in (0, 1]")
        _check(cfg, "encoding.tau", _finite(e.tau) and e.tau > 0, "a number > 0")
        _check(
            cfg, "encoding.threshold", _finite(e.threshold) and 0 <= e.threshold < 1, "in [0, 1)"
        )
        _check_encoder(cfg)
        _choice(cfg, "neuron.name", NEURONS)
        _check(cfg, "neuron.beta", _finite(n.beta) and 0 < n.beta <= 1, "in (0, 1]")
        _check(cfg, "neuron.alpha", _finite(n.alpha) and 0 < n.alpha <= 1, "in (0, 1]")
        _check(cfg, "neuron.threshold", _finite(n.threshold) and n.threshold > 0, "a number > 0")
        _choice(cfg, "neuron.reset", RESETS)
        _choice(cfg, "neuron.surrogate", SURROGATES)
        _check(
            cfg,
            "neuron.slope",
            n.slope is None or (_finite(n.slope) and n.slope > 0),
            "null (the surrogate's default) or a number > 0",
        )
    _choice(cfg, "model.event_input", EVENT_INPUT)
    if m.event_input == "on":
        needs = "model.engine=fused and a spike encoding (rate, latency, delta)"
        _check(
            cfg,
            "model.event_input",
            takes_events(cfg) and e.name in SPIKE_ENCODINGS,
            f"auto or off here: 'on' needs a spiking MLP (model=temporal or single_step) "
            f"with {needs}",
        )
    _choice(cfg, "optimizer.name", OPTIMIZERS)
    _check(cfg, "optimizer.lr", _finite(o.lr) and o.lr > 0, "a number > 0")
    _check(cfg, "optimizer.weight_decay", _finite(o.weight_decay) and o.weight_decay >= 0, ">= 0")
    _check(
        cfg,
        "optimizer.betas",
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        "two numbers in [0, 1)",
    )
    _check(cfg, "optimizer.momentum", _finite(o.momentum) and 0 <= o.momentum < 1, "in [0, 1)")
    _choice(cfg, "optimizer.scheduler", SCHEDULERS)
    _check(cfg, "optimizer.step_size", o.step_size >= 1, "an integer >= 1")
    _check(cfg, "optimizer.gamma", _finite(o.gamma) and 0 < o.gamma <= 1, "in (0, 1]")
    _check(
        cfg, "optimizer.min_lr", _finite(o.min_lr) and 0 <= o.min_lr <= o.lr, "in [0, optimizer.lr]"
    )
    if str(d.get("_target_") or IDX_DATASET) == IDX_DATASET:
        _choice(cfg, "dataset.name", DATASETS)
        _check(
            cfg,
            "dataset.val_size",
            1 <= d.val_size < 60000,
            "an integer in [1, 59999] (validation images held out of the training set)",
        )
    _check(cfg, "dataset.val_size", d.val_size >= 1, "an integer >= 1")
    if "time_bins" in d:  # event frames: one per time step
        steps = m.num_steps if is_spiking(cfg) else None
        _check(
            cfg,
            "dataset.time_bins",
            d.time_bins == steps,
            f"model.num_steps ({steps}), the model's time steps (the default "
            "${model.num_steps} says so)",
        )
    _check(
        cfg,
        "dataset.train_subset",
        d.train_subset is None or d.train_subset >= 1,
        "null (all) or an integer >= 1",
    )
    _check(
        cfg,
        "dataset.eval_subset",
        d.eval_subset is None or d.eval_subset >= 1,
        "null (all) or an integer >= 1",
    )
    _check(cfg, "trainer.epochs", t.epochs >= 1, "an integer >= 1")
    _check(cfg, "trainer.batch_size", t.batch_size >= 1, "an integer >= 1")
    _check(cfg, "trainer.eval_batch_size", t.eval_batch_size >= 1, "an integer >= 1")
    _check(
        cfg,
        "trainer.num_threads",
        t.num_threads is None or t.num_threads >= 1,
        "null or an integer >= 1",
    )
    _check(cfg, "trainer.precision", t.get("precision", "32") in PRECISIONS, "32 or bf16-mixed")
    smoothing = t.get("label_smoothing", 0.0)
    _check(cfg, "trainer.label_smoothing", _finite(smoothing) and 0 <= smoothing < 1, "in [0, 1)")
    if "spiking" in cfg:
        s = cfg.spiking
        _check(cfg, "spiking.mac_pj", _finite(s.mac_pj) and s.mac_pj >= 0, "a number >= 0 (pJ)")
        _check(cfg, "spiking.ac_pj", _finite(s.ac_pj) and s.ac_pj >= 0, "a number >= 0 (pJ)")
        _check(
            cfg,
            "spiking.max_samples",
            s.max_samples is None or s.max_samples >= 1,
            "null (the whole test split) or an integer >= 1",
        )
    if cfg.get("optimized_metric") not in (None, *OPTIMIZED_METRICS):
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric!r} is not allowed; choose "
            f"{' or '.join(OPTIMIZED_METRICS)} (sweeps never select on test accuracy)"
        )
    device = resolve_device(t.device)
    if m.event_input == "on" and device.type != "cpu":
        raise ConfigError(
            f"model.event_input='on' is not allowed with trainer.device={t.device!r} "
            f"({device.type}); event input runs on the CPU only: use auto or off"
        )


def resolve_device(spec: str) -> torch.device:
    """Map ``trainer.device`` (auto | cpu | cuda | cuda:N) to a torch.device, or raise."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={spec!r} but no CUDA GPU is available here; use auto or cpu"
            )
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={spec!r}: only {torch.cuda.device_count()} GPU(s) present"
            )
        return torch.device(spec)
    raise ConfigError(f"trainer.device={spec!r} is not allowed; choose auto, cpu, cuda or cuda:N")


def config_dir() -> str:
    """The folder holding ``config.yaml`` and the groups' YAMLs.

    An installed wheel ships them inside the package (``snnbench/conf``); in a checkout
    (``pip install -e``) they are the repository's top-level ``conf/``, the folder to edit.
    """
    package = Path(__file__).resolve().parent
    for folder in (package / "conf", package.parent / "conf"):
        if (folder / "config.yaml").is_file():
            return str(folder)
    raise FileNotFoundError(f"config.yaml not found in {package / 'conf'} or {package.parent}")
