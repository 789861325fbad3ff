"""Model inputs: uint8 image batches -> ``[B, 784]`` (ANN) or time-first ``[T, B, 784]``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from snnbench import events
from snnbench.config import ModelConfig
from snnbench.encoding import EncodingParams, encode, encode_events, to_unit
from snnbench.events import SpikeEvents


class Batcher:
    """Turns uint8 image batches ``[B, H, W]`` into model inputs: ``[B, H*W]`` in [0, 1] for
    the ANN, the configured encoding ``[T, B, H*W]`` for a spiking model — as
    :class:`~snnbench.events.SpikeEvents` (the same spikes, from the same draws) when
    ``model.event_input`` selects event input and the images are on the CPU."""

    def __init__(self, cfg: DictConfig):
        self.is_ann = cfg.model.name == "ann"
        self.num_steps = int(cfg.model.num_steps or 1)
        enc = OmegaConf.to_container(cfg.encoding, resolve=True)
        self.params = EncodingParams(**enc)  # type: ignore[arg-type]
        mode = cfg.model.get("event_input", ModelConfig.event_input)  # older records lack it
        engine = cfg.model.get("engine", "fused")
        self.events = events.use_events(
            mode, not self.is_ann, engine, self.params.name, torch.device("cpu")
        )

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | SpikeEvents:
        if self.is_ann:
            return to_unit(images)
        if self.events and images.device.type == "cpu":
            return encode_events(images, self.num_steps, self.params, generator)
        return encode(images, self.num_steps, self.params, generator)
