"""Model inputs: uint8 image batches -> ``[B, 784]`` (ANN) or time-first ``[T, B, 784]``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from snnbench.encoding import EncodingParams, encode, to_unit


class Batcher:
    """Turns uint8 image batches ``[B, H, W]`` into model inputs: ``[B, H*W]`` in [0, 1] for
    the ANN, the configured encoding ``[T, B, H*W]`` for a spiking model."""

    def __init__(self, cfg: DictConfig):
        self.is_ann = cfg.model.name == "ann"
        self.num_steps = int(cfg.model.num_steps or 1)
        enc = OmegaConf.to_container(cfg.encoding, resolve=True)
        self.params = EncodingParams(**enc)  # type: ignore[arg-type]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.is_ann:
            return to_unit(images)
        return encode(images, self.num_steps, self.params, generator)
