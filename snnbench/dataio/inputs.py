"""Model inputs: uint8 image batches -> ``[B, C, H, W]`` (non-spiking models) or time-first
``[T, B, C, H, W]`` (spiking models); see :mod:`snnbench.networks.contract`."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from snnbench.config import ModelConfig, is_spiking, takes_events
from snnbench.maths import events
from snnbench.maths.encoding import EncodingParams, encode, encode_events, to_unit
from snnbench.maths.events import SpikeEvents


class Batcher:
    """Turns uint8 image batches ``[B, H, W]`` into model inputs of one sample's shape
    ``input_shape`` (the dataset's, e.g. ``(1, 28, 28)``): ``[B, *input_shape]`` in [0, 1]
    for a non-spiking model, the configured encoding ``[T, B, *input_shape]`` for a spiking
    one — as flat :class:`~snnbench.maths.events.SpikeEvents` ``[T, B, C*H*W]`` (the same spikes,
    from the same draws) when ``model.event_input`` selects event input (the fused MLP)
    and the images are on the CPU. A dataset of event frames (uint8 counts ``[B, T, C, H, W]``,
    e.g. N-MNIST) is fed as it is: ``[T, B, C, H, W]`` float counts, no encoding (``[B, C, H,
    W]`` for a model without time)."""

    def __init__(self, cfg: DictConfig, input_shape: tuple[int, ...] | None = None):
        from snnbench.dataio.datasets import dataset_shape, gives_frames

        if input_shape is None:
            input_shape = dataset_shape(cfg.dataset)[0]
        self.frames = gives_frames(cfg.dataset)
        self.input_shape = tuple(input_shape)
        self.is_ann = not is_spiking(cfg)
        self.num_steps = int(cfg.model.num_steps or 1)
        enc = OmegaConf.to_container(cfg.encoding, resolve=True)
        self.params = EncodingParams(**enc)  # type: ignore[arg-type]
        mode = cfg.model.get("event_input", ModelConfig.event_input)  # older records lack it
        engine = "fused" if takes_events(cfg) else "other"
        self.events = events.use_events(
            mode, not self.is_ann, engine, self.params.name, torch.device("cpu")
        )

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | SpikeEvents:
        if self.frames:  # event counts, already binned in time
            if self.is_ann:
                return images.to(torch.float32).view(-1, *self.input_shape)
            return images.transpose(0, 1).to(torch.float32, memory_format=torch.contiguous_format)
        if self.is_ann:
            return to_unit(images).view(-1, *self.input_shape)
        if self.events and images.device.type == "cpu":
            return encode_events(images, self.num_steps, self.params, generator)
        x = encode(images, self.num_steps, self.params, generator)  # [T, B, C*H*W]
        return x.view(*x.shape[:2], *self.input_shape)
