"""Accuracy of a model on a data split, with a seeded encoder so evaluations repeat."""

from __future__ import annotations

import torch
from torch import nn

from snnbench.dataio import data as data_mod
from snnbench.dataio.inputs import Batcher

#: Evaluation encodes with a generator seeded ``trainer.seed + EVAL_SEED_OFFSET``.
EVAL_SEED_OFFSET = 7919


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits ``[B, classes]`` (a spiking output carries them as ``.logits``)."""
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
