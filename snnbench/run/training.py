"""Training: :func:`run` is the task a command, a sweep job or a test calls.

``run(cfg)`` validates the composed config, loads data, trains ``trainer.epochs`` epochs,
writes ``metrics.json`` (atomically, after every epoch) and a checkpoint into
``cfg.run_dir``, then evaluates the test set and the spiking metrics, and returns
``cfg.optimized_metric`` (a validation accuracy: what a sweeper optimises). Model
selection looks only at validation accuracy: ``test_acc`` is the test accuracy of the
weights of the best-validation epoch, ``final_test_acc`` that of the last epoch's.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from snnbench.config import resolve_device, validate
from snnbench.dataio import data as data_mod
from snnbench.dataio.augment import Augment, batch_generator, build_augment
from snnbench.dataio.datasets import dataset_shape, load_dataset
from snnbench.dataio.inputs import Batcher
from snnbench.maths import dropout
from snnbench.maths.engine import autocast
from snnbench.measure.evaluation import EVAL_SEED_OFFSET, evaluate, logits_of
from snnbench.measure.metrics import spiking_metrics
from snnbench.networks.contract import build_model
from snnbench.networks.mlp import count_parameters
from snnbench.run import checkpoint as ckpt
from snnbench.run import run_folder
from snnbench.run.credentials import mask_config
from snnbench.run.loggers import open_loggers
from snnbench.run.optim import build_optimizer
from snnbench.run.record import (
    add_epoch,
    continue_record,
    end_status,
    finished_record,
    new_record,
    now,
    objective,
)
from snnbench.run.results import (
    BEST_MODEL_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    save_torch,
    write_json,
)

log = logging.getLogger("snnbench")

EpochCallback = Callable[[int, dict[str, Any]], None]

__all__ = ["Batcher", "EVAL_SEED_OFFSET", "TrainingDiverged", "evaluate", "logits_of", "run"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class _State:
    """What one run carries between epochs (restored from a checkpoint on resume)."""

    def __init__(self, cfg: DictConfig, device: torch.device, model: nn.Module):
        """``model``: built by :func:`_build_model` (its weights drawn from ``trainer.seed``)."""
        seed = int(cfg.trainer.seed)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        self.model = model.to(device)
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model)
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        self.encode_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.best_state: ckpt.StateDict | None = None
        self.start_epoch = 1
        self.augment = Augment()  # training batches only; draws keyed by (seed, epoch, step)

    def restore(self, checkpoint: dict[str, Any], record: dict[str, Any]) -> None:
        """Continue after the checkpoint's epoch: weights, optimizer, schedule, RNGs, record."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        ckpt.set_rng_state(checkpoint["rng"], self.shuffle_gen, self.encode_gen)
        self.best_state = checkpoint["best_model"]
        continue_record(record, checkpoint["record"], checkpoint["epoch"])
        self.start_epoch = checkpoint["epoch"] + 1

    def save(self, path: Path, cfg: DictConfig, epoch: int, record: dict[str, Any]) -> None:
        ckpt.save(
            path,
            epoch=epoch,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            rng=ckpt.rng_state(self.shuffle_gen, self.encode_gen),
            cfg=cfg,
            record=record,
            best_state=self.best_state,
        )


def _resume_checkpoint(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint to continue from (``trainer.resume=true`` and one exists), else None."""
    path = run_dir / CHECKPOINT_FILE
    if not (cfg.trainer.resume and path.is_file()):
        return None
    checkpoint = ckpt.load(path)
    ckpt.check_same_config(checkpoint, cfg, run_dir)
    return checkpoint


def run(cfg: DictConfig, on_epoch: EpochCallback | None = None) -> float:
    """Train and evaluate one configuration; return ``cfg.optimized_metric`` (default: the
    best validation accuracy; ``final_val_acc``: the last epoch's).

    ``on_epoch(epoch, record)`` is called after each epoch's record is written (a sweeper
    uses it to report and prune); an exception it raises ends the run, recorded as failed
    unless it is an ``optuna.TrialPruned`` (recorded as ``pruned``).
    """
    mask_config(cfg)  # a URL password from a config file stays out of records and trackers
    validate(cfg)
    with run_folder.hold(Path(cfg.run_dir), resume=bool(cfg.trainer.resume)):  # one writer
        return _run(cfg, on_epoch)


def _run(cfg: DictConfig, on_epoch: EpochCallback | None) -> float:
    """:func:`run` once it holds the run folder."""
    augment = build_augment(cfg)
    input_shape, num_classes = dataset_shape(cfg.dataset)  # the dataset object, not loaded
    model = _build_model(cfg, input_shape, num_classes)  # a bad _target_ stops before any data
    trackers = open_loggers(cfg)  # experiment trackers (cfg.logger); none by default
    run_dir = Path(cfg.run_dir)
    device = resolve_device(cfg.trainer.device)
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    checkpoint = _resume_checkpoint(cfg, run_dir)
    if checkpoint is not None:
        finished = finished_record(run_dir, checkpoint["epoch"], cfg.trainer.epochs)
        if finished is not None:  # nothing left to do: return at once, leave the record as is
            log.info("%s already completed %d epochs", run_dir, checkpoint["epoch"])
            return objective(cfg, finished)

    splits = load_dataset(cfg.dataset)
    record = new_record(cfg, splits, device)
    splits = data_mod.DataSplits(
        splits.train.to(device), splits.val.to(device), splits.test.to(device), splits.source
    )
    state = _State(cfg, device, model)
    record["n_params"] = count_parameters(state.model)
    if checkpoint is not None:
        state.restore(checkpoint, record)
        if state.best_state is not None:  # the export always matches the checkpoint
            save_torch(run_dir / BEST_MODEL_FILE, state.best_state)
        log.info("resuming %s after epoch %d", run_dir, checkpoint["epoch"])
        del checkpoint

    metrics_path = run_dir / METRICS_FILE
    write_json(metrics_path, record)
    batcher = Batcher(cfg, input_shape)
    state.augment = augment
    trackers.start(cfg, run_dir)
    try:
        for epoch in range(state.start_epoch, cfg.trainer.epochs + 1):
            _run_epoch(cfg, state, splits, batcher, device, epoch, record)
            state.save(run_dir / CHECKPOINT_FILE, cfg, epoch, record)
            if record["best_epoch"] == epoch:  # after the checkpoint that names it
                save_torch(run_dir / BEST_MODEL_FILE, state.best_state)
            write_json(metrics_path, record)
            trackers.log_epoch(record["history"][-1])
            if on_epoch is not None:
                on_epoch(epoch, record)
        _finish(cfg, state, splits, batcher, record)
        record["status"] = "completed"
        record["finished_at"] = now()
        write_json(metrics_path, record)
        trackers.finish(record)
    except BaseException as exc:
        record["status"] = end_status(exc)
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["finished_at"] = now()
        write_json(metrics_path, record)
        trackers.finish(record)
        raise
    return objective(cfg, record)


def _build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The run's model, its initial weights drawn from ``trainer.seed``."""
    torch.manual_seed(int(cfg.trainer.seed))
    return build_model(cfg, input_shape, num_classes)


def _eval_seed(cfg: DictConfig) -> int:
    return int(cfg.trainer.seed) + EVAL_SEED_OFFSET


def _precision(cfg: DictConfig, device: torch.device):
    """The context of every forward pass (training, evaluation, spiking metrics):
    ``trainer.precision`` (see :func:`snnbench.maths.engine.autocast`)."""
    return autocast(str(cfg.trainer.get("precision", "32")), device)


def _run_epoch(
    cfg: DictConfig,
    state: _State,
    splits: data_mod.DataSplits,
    batcher: Batcher,
    device: torch.device,
    epoch: int,
    record: dict[str, Any],
) -> None:
    """Train one epoch, evaluate validation (and test with ``trainer.test_every_epoch``),
    and add the epoch to ``record``; keep the weights when validation improved."""
    entry = _train_epoch(
        cfg, state.model, state.optimizer, splits, batcher, state.shuffle_gen,
        state.encode_gen, device, epoch, state.augment,
    )  # fmt: skip
    if state.scheduler is not None:
        state.scheduler.step()
    t0 = time.perf_counter()
    bs, seed = cfg.trainer.eval_batch_size, _eval_seed(cfg)
    with _precision(cfg, device):
        entry["val_acc"] = evaluate(state.model, splits.val, batcher, bs, seed)
        entry["test_acc"] = (
            evaluate(state.model, splits.test, batcher, bs, seed)
            if cfg.trainer.test_every_epoch
            else None
        )
    entry["eval_time_s"] = time.perf_counter() - t0
    if add_epoch(record, entry):
        state.best_state = ckpt.clone_state(state.model)
    test = "" if entry["test_acc"] is None else f"  test {entry['test_acc']:.4f}"
    log.info(
        "epoch %d/%d  loss %.4f  train %.4f  val %.4f%s  (%.1fs train, %.1fs eval)",
        epoch, cfg.trainer.epochs, entry["train_loss"], entry["train_acc"], entry["val_acc"],
        test, entry["time_s"], entry["eval_time_s"],
    )  # fmt: skip


def _finish(
    cfg: DictConfig,
    state: _State,
    splits: data_mod.DataSplits,
    batcher: Batcher,
    record: dict[str, Any],
) -> None:
    """After the last epoch: test accuracy of the last and of the best-validation weights,
    then the spiking metrics with the best weights. A failure of the spiking pass is
    recorded in ``record["spiking"]["error"]``; it does not fail a trained run."""
    with _precision(cfg, splits.test.images.device):
        _finish_passes(cfg, state, splits, batcher, record)


def _finish_passes(
    cfg: DictConfig,
    state: _State,
    splits: data_mod.DataSplits,
    batcher: Batcher,
    record: dict[str, Any],
) -> None:
    """:func:`_finish`'s evaluations, in the run's precision."""
    bs, seed = cfg.trainer.eval_batch_size, _eval_seed(cfg)
    history = record["history"]
    last = history[-1]
    if last["test_acc"] is None:
        last_test = evaluate(state.model, splits.test, batcher, bs, seed)
    else:
        last_test = last["test_acc"]
    record["final_test_acc"] = last_test
    state.model.load_state_dict(state.best_state)
    best = next(h for h in history if h["epoch"] == record["best_epoch"])
    if best["epoch"] == last["epoch"]:
        record["test_acc"] = last_test
    elif best["test_acc"] is not None:
        record["test_acc"] = best["test_acc"]
    else:
        record["test_acc"] = evaluate(state.model, splits.test, batcher, bs, seed)
    log.info(
        "test accuracy %.4f (best-validation epoch %d), %.4f (last epoch)",
        record["test_acc"], record["best_epoch"], record["final_test_acc"],
    )  # fmt: skip
    if cfg.get("spiking") is not None and cfg.spiking.enabled:
        try:
            record["spiking"] = spiking_metrics(state.model, splits.test, batcher, cfg, seed)
        except Exception as exc:  # the trained run stands; say what the pass could not do
            log.warning("spiking metrics failed: %s: %s", type(exc).__name__, exc)
            record["spiking"] = {"error": f"{type(exc).__name__}: {exc}"}


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
    augment: Augment | None = None,
) -> dict[str, Any]:
    """One pass over the training split (each batch through ``augment``, the model's dropout
    masks drawn from the batch's own generator, the loss with ``trainer.label_smoothing``);
    returns the epoch's history entry (no eval)."""
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
    smoothing = float(cfg.trainer.get("label_smoothing", 0.0))
    seed = int(cfg.trainer.seed)
    dropping = dropout.has_dropout(model)
    for step, (images, labels) in enumerate(bar):
        if augment is not None and augment.active:
            images = augment(images, batch_generator(seed, epoch, step))
        if dropping:  # masks keyed by (seed, epoch, step): a resumed run draws the same
            dropout.set_generator(model, dropout.batch_generator(seed, epoch, step, device))
        with _precision(cfg, device):  # the forward only: backward follows its dtypes
            logits = logits_of(model, batcher(images, encode_gen))
            loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
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
    dropout.set_generator(model, None)
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
