"""Checkpoints for exact resume: model, optimizer, schedule, every RNG state, the best weights.

A checkpoint holds only tensors and plain Python values (dicts, lists, tuples, numbers,
strings), so it is loaded with ``torch.load(..., weights_only=True)``: resuming from a
run directory someone else made cannot run code. The best-validation weights travel inside
the checkpoint, so ``best_model.pt`` (an export of them) always matches the checkpoint's
``best_epoch``, whatever moment a run was killed at.
"""

from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from snnbench.config import ADDED_MODEL_KEYS, ConfigError, flatten
from snnbench.maths.encoding import RATE_SAMPLER
from snnbench.run.results import save_torch

log = logging.getLogger("snnbench")

#: Config keys that may differ between a checkpoint and the run resuming it (where the same
#: MNIST files are found is not part of the run).
RESUME_FREE_KEYS = (
    "trainer.resume",
    "trainer.progress",
    "trainer.num_threads",
    "run_dir",
    "dataset.root",
    "dataset.download",
    "model.event_input",  # how layer 1 is executed (events or dense): the same model
    "tag",  # a label
)
#: Key prefixes free on resume, too: what is computed after training, experiment trackers,
#: and which Optuna trial reports (a retried trial continues the lost one's run).
RESUME_FREE_PREFIXES = ("spiking.", "logger.", "optuna.")

StateDict = dict[str, torch.Tensor]


class CheckpointMismatch(ConfigError):
    """The run folder's checkpoint cannot be resumed by this config and version: proven,
    not suspected (``python -m snnbench`` exits with ``exit_codes.STALE_CHECKPOINT``)."""


def rng_state(shuffle: torch.Generator, encode_gen: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain values (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "shuffle": shuffle.get_state(),
        "encode": encode_gen.get_state(),
        "rate_sampler": RATE_SAMPLER,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(
    state: dict[str, Any], shuffle: torch.Generator, encode_gen: torch.Generator
) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    shuffle.set_state(state["shuffle"])
    encode_gen.set_state(state["encode"])
    if state.get("rate_sampler", "torch-random-words") != RATE_SAMPLER:
        # same distribution, other draws: the resumed epochs are not those an unbroken
        # run of the older snnbench would have drawn (a rate-encoded run's spikes differ)
        log.warning(
            "checkpoint drawn with rate sampler %r; resuming with %r (same Bernoulli "
            "rates, different spikes from here on)",
            state.get("rate_sampler", "torch-random-words"),
            RATE_SAMPLER,
        )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def comparable(cfg: DictConfig) -> dict[str, Any]:
    """The flattened resolved config minus the keys a resume may change."""
    return _binding(flatten(OmegaConf.to_container(cfg, resolve=True)))  # type: ignore[arg-type]


def _binding(flat: dict[str, Any]) -> dict[str, Any]:
    """The keys of a flattened config that a resume may not change."""
    return {
        k: v
        for k, v in flat.items()
        if k not in RESUME_FREE_KEYS and not k.startswith(RESUME_FREE_PREFIXES)
    }


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); one-line error if it is not ours."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointMismatch(
            f"{path} is not a checkpoint this version of snnbench can resume safely ({first}); "
            "start the run in a new hydra.run.dir"
        ) from None


def _legacy_targets(old: dict[str, Any], new: dict[str, Any]) -> None:
    """A checkpoint from before models and datasets were objects: its config has no
    ``_target_`` (give it the built-in one its name meant) and may hold model keys the
    built-in model no longer has (the ANN's readout and engine: never read, dropped)."""
    from snnbench.dataio.datasets import IDX_TARGET
    from snnbench.networks.contract import LEGACY_TARGETS

    if "model._target_" in old:
        return
    old["model._target_"] = LEGACY_TARGETS.get(str(old.get("model.name")))
    old.setdefault("dataset._target_", IDX_TARGET)
    for key in [k for k in old if k.startswith("model.") and k not in new]:
        del old[key]


def check_same_config(checkpoint: dict[str, Any], cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to resume a checkpoint written under another config, naming the keys."""
    # filtered again: a checkpoint written when fewer keys were free still resumes
    old, new = _binding(checkpoint["config"]), comparable(cfg)
    _legacy_targets(old, new)
    old.setdefault("trainer.precision", "32")  # written before the key existed: float32
    for key, default in ADDED_MODEL_KEYS.items():  # older runs ran with the default
        if f"model.{key}" not in old and new.get(f"model.{key}") == default:
            old[f"model.{key}"] = default
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise CheckpointMismatch(
            f"trainer.resume=true but {run_dir} holds a run of a different config "
            f"(differs in {', '.join(changed)}); use a new hydra.run.dir or the same config"
        )


def save(
    path: Path,
    *,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng: dict[str, Any],
    cfg: DictConfig,
    record: dict[str, Any],
    best_state: StateDict | None,
) -> None:
    """Write the checkpoint after ``epoch`` atomically (``record`` without status/config)."""
    save_torch(
        path,
        {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng,
            "config": comparable(cfg),
            "record": {k: v for k, v in record.items() if k not in ("status", "config")},
            "best_model": best_state,
        },
    )


def clone_state(model: torch.nn.Module) -> StateDict:
    """A detached copy of the model's weights (kept while later epochs train)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
