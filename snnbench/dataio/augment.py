"""Training-batch augmentation, the same for every model: random translation and a small random
affine of the uint8 images, drawn per sample, on the fly, before any encoding.

The draws come from a generator seeded by ``(seed, epoch, step)`` (:func:`batch_generator`), so
a run is reproducible from its seed and a resumed run (which restarts at an epoch boundary)
draws exactly what an uninterrupted one would — nothing to save in a checkpoint. Validation
and test batches are never augmented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from snnbench.config import ConfigError

#: Upper bounds of the knobs (beyond them an MNIST digit stops being the same digit).
MAX_SHIFT_PX = 4
MAX_ROTATE_DEG = 45.0
MAX_SCALE = 0.5
MAX_SHEAR_DEG = 45.0


def shift(images: torch.Tensor, max_px: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by ``(dy, dx)`` drawn uniformly from ``[-max_px, max_px]`` (the
    same for all its channels), filling with 0 (black). uint8 ``[B, H, W]`` or
    ``[B, C, H, W]`` -> the same shape; exact (no resampling)."""
    if max_px == 0:
        return images
    b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    x = images.reshape(b, -1, h, w)
    dev = images.device
    offsets = torch.randint(-max_px, max_px + 1, (2, b), generator=generator).to(dev)
    padded = F.pad(x, (max_px, max_px, max_px, max_px))
    rows = (max_px - offsets[0])[:, None, None, None] + torch.arange(h, device=dev)[:, None]
    cols = (max_px - offsets[1])[:, None, None, None] + torch.arange(w, device=dev)[None, :]
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols].reshape(images.shape)


def affine(
    images: torch.Tensor,
    rotate_deg: float,
    scale: float,
    shear_deg: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """A random rotation (±``rotate_deg``), zoom (×(1 ± ``scale``)) and shear (±``shear_deg``)
    per image about its centre, bilinear, zero fill, rounded back to uint8.
    uint8 ``[B, H, W]`` or ``[B, C, H, W]`` -> the same shape."""
    if rotate_deg == 0 and scale == 0 and shear_deg == 0:
        return images
    b = images.shape[0]
    u = torch.rand(3, b, generator=generator, dtype=torch.float64) * 2 - 1  # [-1, 1)
    angle = u[0] * math.radians(rotate_deg)
    zoom = 1 + u[1] * scale
    sh = torch.tan(u[2] * math.radians(shear_deg))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> input coordinates: (R @ Shear)^-1 / zoom, in affine_grid's [-1, 1] frame
    a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    s = torch.zeros(b, 2, 2, dtype=torch.float64)
    s[:, 0, 0], s[:, 0, 1], s[:, 1, 1] = 1.0, sh, 1.0
    inverse = torch.linalg.inv(a @ s) / zoom[:, None, None]
    inverse = inverse.to(device=images.device, dtype=torch.float32)
    h, w = images.shape[-2:]
    grid = _base_grid(h, w, images.device).expand(b, -1, -1) @ inverse.transpose(1, 2)
    x = images.reshape(b, -1, h, w).to(torch.float32)
    grid = grid.reshape(b, h, w, 2)  # = affine_grid(theta with no translation), cheaper
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).reshape(images.shape)


def _base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel centres in ``affine_grid``'s [-1, 1] frame (align_corners=False): ``[1, H*W, 2]``
    as (x, y)."""
    xs = (torch.arange(w, device=device) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=device) * 2 + 1) / h - 1
    return torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], -1).reshape(1, -1, 2)


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator of one training batch's draws: a function of (seed, epoch, step) only."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(step)]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


@dataclass(frozen=True)
class Augment:
    """``augment.*`` (conf/augment): what each training batch goes through, in this order:
    ``affine`` (when any of rotate/scale/shear is set), then ``shift``. All zeros: nothing."""

    shift: int = 0
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            ("shift", self.shift, 0, MAX_SHIFT_PX),
            ("rotate", self.rotate, 0.0, MAX_ROTATE_DEG),
            ("scale", self.scale, 0.0, MAX_SCALE),
            ("shear", self.shear, 0.0, MAX_SHEAR_DEG),
        )
        for key, value, low, high in checks:
            whole = key != "shift" or (isinstance(value, int) and not isinstance(value, bool))
            if not whole or not low <= value <= high:
                kind = "an integer" if key == "shift" else "a number"
                raise ConfigError(
                    f"augment.{key}={value!r} is not allowed; it must be {kind} in [{low}, {high}]"
                )

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.scale or self.shear)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 ``[B, H, W]`` -> augmented uint8 ``[B, H, W]``."""
        if not self.active:
            return images
        images = affine(images, self.rotate, self.scale, self.shear, generator)
        return shift(images, self.shift, generator)


def build_augment(cfg: object) -> Augment:
    """The run's :class:`Augment` from ``cfg.augment`` (absent or null: none); a bad value is a
    :class:`ConfigError` naming the key."""
    from omegaconf import DictConfig, OmegaConf

    section = getattr(cfg, "get", lambda *_: None)("augment")
    if section is None:
        return Augment()
    if not isinstance(section, DictConfig):
        raise ConfigError(f"augment={section!r} is not allowed; choose none, shift or affine")
    values = OmegaConf.to_container(section, resolve=True)
    assert isinstance(values, dict)
    values.pop("_target_", None)
    unknown = sorted(set(values) - {"shift", "rotate", "scale", "shear"})
    if unknown:
        raise ConfigError(
            f"augment.{unknown[0]} is not a key; the keys are shift, rotate, scale, shear"
        )
    return Augment(**values)
