"""Training-batch augmentation: exact shifts, seeded draws, bounds, train batches only."""

from __future__ import annotations

import pytest
import torch

from snnbench.config import ConfigError
from snnbench.dataio.augment import Augment, affine, batch_generator, build_augment, shift


def _dots(n: int) -> torch.Tensor:
    """``n`` 28x28 uint8 images, each black but one white pixel at (14, 14)."""
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 14, 14] = 255
    return images


def test_shift_moves_each_image_by_its_own_offset_exactly():
    out = shift(_dots(400), 1, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == (400, 28, 28)
    assert (out.flatten(1).sum(1) == 255).all()  # one white pixel each, nothing resampled
    where = (out == 255).nonzero()[:, 1:] - 14
    assert where.abs().max() == 1
    assert len({tuple(w.tolist()) for w in where}) == 9  # every offset in [-1, 1]^2 occurs


def test_shift_fills_with_black_at_the_border():
    images = torch.full((50, 28, 28), 255, dtype=torch.uint8)
    out = shift(images, 2, torch.Generator().manual_seed(1))
    lost = 28 * 28 - (out == 255).flatten(1).sum(1)
    assert (out[(out != 255)] == 0).all() and (lost > 0).any()


def test_no_augmentation_is_the_identity_and_affine_changes_images():
    images = _dots(8)
    gen = torch.Generator().manual_seed(0)
    assert Augment()(images, gen) is images
    assert affine(images, 0.0, 0.0, 0.0, gen) is images
    moved = affine(_dots(64), 30.0, 0.2, 10.0, torch.Generator().manual_seed(0))
    assert moved.dtype == torch.uint8 and not torch.equal(moved, _dots(64))


def test_draws_are_a_function_of_seed_epoch_and_step():
    aug, images = Augment(shift=2, rotate=10.0), _dots(32)
    a = aug(images, batch_generator(0, 3, 7))
    assert torch.equal(a, aug(images, batch_generator(0, 3, 7)))
    assert not torch.equal(a, aug(images, batch_generator(0, 3, 8)))
    assert not torch.equal(a, aug(images, batch_generator(1, 3, 7)))


@pytest.mark.parametrize(
    "values,key",
    [({"shift": 5}, "augment.shift"), ({"shift": 1.5}, "augment.shift"),
     ({"rotate": -1.0}, "augment.rotate"), ({"scale": 0.6}, "augment.scale")],
)  # fmt: skip
def test_bad_values_name_their_key(values, key):
    with pytest.raises(ConfigError, match=key):
        Augment(**values)


def test_composed_presets_build(make_cfg):
    assert build_augment(make_cfg("augment=none")) == Augment()
    assert build_augment(make_cfg("augment=shift")) == Augment(shift=1)
    assert build_augment(make_cfg("augment=affine")).rotate == 8.0
    with pytest.raises(ConfigError, match="augment.shift"):
        build_augment(make_cfg("augment.shift=9"))


def test_colour_images_move_all_their_channels_together():
    images = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    images[:, :, 4, 4] = torch.tensor([10, 20, 30], dtype=torch.uint8)[:, None].T
    out = shift(images, 1, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    for b in range(64):
        where = {tuple(w.tolist()) for w in (out[b] > 0).nonzero()[:, 1:]}
        assert len(where) == 1  # one pixel position, the same in every channel
        (y, x) = where.pop()
        assert out[b, :, y, x].tolist() == [10, 20, 30]
    moved = Augment(rotate=20.0)(images, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and moved.dtype == torch.uint8
