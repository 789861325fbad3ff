"""Training, evaluation, checkpoint/resume and the run record: :func:`run` is the task.

``run(cfg)`` validates the composed config, loads data, trains ``trainer.epochs`` epochs,
writes ``metrics.json`` (atomically, after every epoch) and a checkpoint into
``cfg.run_dir``, and returns the best validation accuracy (what a sweeper optimises).
Model selection looks only at validation accuracy; ``test_acc`` is the test accuracy of
the epoch with the best validation accuracy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from snnbench import data as data_mod
from snnbench.config import ConfigError, resolve_device, validate
from snnbench.encoding import EncodingParams, encode, to_unit
from snnbench.engine import tune_cpu_allocator
from snnbench.metrics import spiking_metrics
from snnbench.models import build_model, count_parameters
from snnbench.results import (
    BEST_MODEL_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    SCHEMA_VERSION,
    read_json,
    save_torch,
    versions,
    write_json,
)

log = logging.getLogger("snnbench")

#: Config keys that may differ between a checkpoint and the run resuming it.
RESUME_FREE_KEYS = ("trainer.resume", "trainer.progress", "trainer.num_threads", "run_dir")
#: Evaluation encodes with a generator seeded ``trainer.seed + EVAL_SEED_OFFSET``.
EVAL_SEED_OFFSET = 7919
#: Key prefixes free on resume: what is computed after training, and which Optuna trial
#: reports (a retried trial continues the lost one's run).
RESUME_FREE_PREFIXES = ("spiking.", "optuna.")

EpochCallback = Callable[[int, dict[str, Any]], None]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class Batcher:
    """Turns uint8 image batches into model inputs: ``[B, 784]`` (ANN) or ``[T, B, 784]``."""

    def __init__(self, cfg: DictConfig):
        self.is_ann = cfg.model.name == "ann"
        self.num_steps = int(cfg.model.num_steps or 1)
        enc = OmegaConf.to_container(cfg.encoding, resolve=True)
        self.params = EncodingParams(**enc)  # type: ignore[arg-type]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.is_ann:
            return to_unit(images)
        return encode(images, self.num_steps, self.params, generator)


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def evaluate(
    model: nn.Module, split: data_mod.Split, batcher: Batcher, batch_size: int, seed: int
) -> float:
    """Accuracy of ``model`` on ``split``; the encoder draws from a generator seeded with
    ``seed`` so an evaluation is repeatable and leaves the training RNG streams alone."""
    model.eval()
    device = split.images.device
    gen = torch.Generator(device=device).manual_seed(seed)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.no_grad():
        for images, labels in data_mod.batches(split, batch_size):
            pred = logits_of(model, batcher(images, gen)).argmax(1)
            correct += (pred == labels).sum()
    model.train()
    return correct.item() / max(len(split), 1)


def build_optimizer(cfg: DictConfig, model: nn.Module):
    """Optimizer and (optional) per-epoch learning-rate scheduler from ``cfg.optimizer``."""
    o = cfg.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "adam":
        opt = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    elif o.name == "adamw":
        opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    if o.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=cfg.trainer.epochs, eta_min=o.min_lr
        )
    elif o.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
    else:
        sched = None
    return opt, sched


def _rng_state(shuffle: torch.Generator, encode_gen: torch.Generator) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "shuffle": shuffle.get_state(),
        "encode": encode_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(
    state: dict[str, Any], shuffle: torch.Generator, encode_gen: torch.Generator
) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    shuffle.set_state(state["shuffle"])
    encode_gen.set_state(state["encode"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _comparable(cfg: DictConfig) -> dict[str, Any]:
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {
        k: v
        for k, v in flat.items()
        if k not in RESUME_FREE_KEYS and not k.startswith(RESUME_FREE_PREFIXES)
    }


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # not running under Hydra (tests, notebooks)
        return []


def run(cfg: DictConfig, on_epoch: EpochCallback | None = None) -> float:
    """Train and evaluate one configuration; return ``cfg.optimized_metric`` (default: the
    best validation accuracy; ``final_val_acc``: the last epoch's).

    ``on_epoch(epoch, record)`` is called after each epoch's record is written (a sweeper
    uses it to report and prune); an exception it raises ends the run, recorded as failed
    unless it is an ``optuna.TrialPruned`` (recorded as ``pruned``).
    """
    validate(cfg)
    run_dir = Path(cfg.run_dir)
    device = resolve_device(cfg.trainer.device)
    tune_cpu_allocator()  # keep freed [T, B, N] buffers mapped (no numerical effect)
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))

    checkpoint_path = run_dir / CHECKPOINT_FILE
    checkpoint = None
    if cfg.trainer.resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        old, new = checkpoint["config"], _comparable(cfg)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise ConfigError(
                f"trainer.resume=true but {run_dir} holds a run of a different config "
                f"(differs in {', '.join(changed)}); use a new hydra.run.dir or the same config"
            )
        finished = _finished_record(run_dir, checkpoint["epoch"], cfg.trainer.epochs)
        if finished is not None:  # nothing left to do: return at once, leave the record as is
            log.info("%s already completed %d epochs", run_dir, checkpoint["epoch"])
            return _objective(cfg, finished)

    splits = data_mod.load(**OmegaConf.to_container(cfg.dataset, resolve=True))
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "model": cfg.model.name,
        "encoding": None if cfg.model.name == "ann" else cfg.encoding.name,
        "neuron": None if cfg.model.name == "ann" else cfg.neuron.name,
        "num_steps": cfg.model.num_steps,
        "epochs": cfg.trainer.epochs,
        "epochs_completed": 0,
        "best_val_acc": None,
        "best_epoch": None,
        "test_acc": None,
        "final_test_acc": None,
        "train_time_s": 0.0,
        "history": [],
        "n_params": None,
        "device": str(device),
        "data": {
            "source": splits.source,
            "n_train": len(splits.train),
            "n_val": len(splits.val),
            "n_test": len(splits.test),
        },
        "started_at": _now(),
        "finished_at": None,
        "error": None,
        "versions": versions(),
        "overrides": _overrides(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    splits = data_mod.DataSplits(
        splits.train.to(device), splits.val.to(device), splits.test.to(device), splits.source
    )

    seed = int(cfg.trainer.seed)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model = build_model(cfg).to(device)
    optimizer, scheduler = build_optimizer(cfg, model)
    record["n_params"] = count_parameters(model)
    shuffle_gen = torch.Generator().manual_seed(seed)
    encode_gen = torch.Generator(device=device).manual_seed(seed + 1)
    batcher = Batcher(cfg)
    start_epoch = 1
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_state(checkpoint["rng"], shuffle_gen, encode_gen)
        record.update(checkpoint["record"])
        record["status"] = "running"
        record["resumed_at_epoch"] = checkpoint["epoch"]
        start_epoch = checkpoint["epoch"] + 1
        log.info("resuming %s after epoch %d", run_dir, checkpoint["epoch"])
        if start_epoch > cfg.trainer.epochs:
            log.info("all epochs done; finishing the run (spiking metrics)")

    metrics_path = run_dir / METRICS_FILE
    write_json(metrics_path, record)
    eval_seed = seed + EVAL_SEED_OFFSET
    try:
        for epoch in range(start_epoch, cfg.trainer.epochs + 1):
            entry = _train_epoch(
                cfg, model, optimizer, splits, batcher, shuffle_gen, encode_gen, device, epoch
            )
            if scheduler is not None:
                scheduler.step()
            t0 = time.perf_counter()
            entry["val_acc"] = evaluate(
                model, splits.val, batcher, cfg.trainer.eval_batch_size, eval_seed
            )
            entry["test_acc"] = evaluate(
                model, splits.test, batcher, cfg.trainer.eval_batch_size, eval_seed
            )
            entry["eval_time_s"] = time.perf_counter() - t0
            record["history"].append(entry)
            record["epochs_completed"] = epoch
            record["train_time_s"] = sum(h["time_s"] for h in record["history"])
            record["final_test_acc"] = entry["test_acc"]
            if record["best_val_acc"] is None or entry["val_acc"] > record["best_val_acc"]:
                record["best_val_acc"] = entry["val_acc"]
                record["best_epoch"] = epoch
                record["test_acc"] = entry["test_acc"]
                save_torch(run_dir / BEST_MODEL_FILE, model.state_dict())
            log.info(
                "epoch %d/%d  loss %.4f  train %.4f  val %.4f  test %.4f  (%.1fs train, %.1fs eval)",  # noqa: E501
                epoch,
                cfg.trainer.epochs,
                entry["train_loss"],
                entry["train_acc"],
                entry["val_acc"],
                entry["test_acc"],
                entry["time_s"],
                entry["eval_time_s"],
            )
            save_torch(
                checkpoint_path,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": _rng_state(shuffle_gen, encode_gen),
                    "config": _comparable(cfg),
                    "record": {k: v for k, v in record.items() if k not in ("status", "config")},
                },
            )
            write_json(metrics_path, record)
            if on_epoch is not None:
                on_epoch(epoch, record)
        if cfg.get("spiking") is not None and cfg.spiking.enabled:
            # on the test set with the best-validation weights (those of test_acc)
            best = torch.load(run_dir / BEST_MODEL_FILE, map_location=device, weights_only=True)
            model.load_state_dict(best)
            record["spiking"] = spiking_metrics(model, splits.test, batcher, cfg, eval_seed)
        record["status"] = "completed"
        record["finished_at"] = _now()
        write_json(metrics_path, record)
    except BaseException as exc:
        if type(exc).__name__ == "TrialPruned":
            record["status"] = "pruned"
        elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C: resumable, not a failure
            record["status"] = "interrupted"
        else:
            record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["finished_at"] = _now()
        write_json(metrics_path, record)
        raise
    return _objective(cfg, record)


def _objective(cfg: DictConfig, record: dict[str, Any]) -> float:
    """The value returned to a sweeper: ``cfg.optimized_metric`` of a finished record."""
    if cfg.get("optimized_metric", "best_val_acc") == "final_val_acc":
        return float(record["history"][-1]["val_acc"])
    return float(record["best_val_acc"])


def _finished_record(run_dir: Path, ckpt_epoch: int, epochs: int) -> dict[str, Any] | None:
    """The run's metrics.json if it says ``completed`` after ``epochs`` epochs, else None."""
    if ckpt_epoch < epochs:
        return None
    try:
        record = read_json(run_dir / METRICS_FILE)
    except (OSError, ValueError):
        return None
    done = record.get("status") == "completed" and record.get("epochs_completed") == epochs
    return record if done else None


def _train_epoch(
    cfg: DictConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    splits: data_mod.DataSplits,
    batcher: Batcher,
    shuffle_gen: torch.Generator,
    encode_gen: torch.Generator,
    device: torch.device,
    epoch: int,
) -> dict[str, Any]:
    """One pass over the training split; returns the epoch's history entry (no eval)."""
    from tqdm.auto import tqdm

    model.train()
    batches = data_mod.batches(splits.train, cfg.trainer.batch_size, shuffle_gen)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(
        batches,
        desc=f"epoch {epoch}/{cfg.trainer.epochs}",
        leave=False,
        disable=not cfg.trainer.progress,
        mininterval=1.0,
        unit="batch",
    )
    for step, (images, labels) in enumerate(bar):
        logits = logits_of(model, batcher(images, encode_gen))
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = labels.shape[0]
        loss_sum += loss.detach() * n
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += n
        if step % 10 == 0 or step == len(batches) - 1:
            value = loss_sum.item()
            if not np.isfinite(value):
                raise TrainingDiverged(
                    f"training loss became {value} at epoch {epoch}, step {step}; "
                    "lower optimizer.lr or check the config"
                )
            if step % 50 == 0:
                bar.set_postfix(loss=f"{value / seen:.4f}", refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    return {
        "epoch": epoch,
        "train_loss": loss_sum.item() / seen,
        "train_acc": correct.item() / seen,
        "time_s": elapsed,
        "lr": optimizer.param_groups[0]["lr"],
    }
