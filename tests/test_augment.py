"""DiffAugment (consistency/objectives/augment.py) against exact answers: translations are zero-filled integer shifts
within ±⌊size/8 + ½⌋, cutout zeroes one (clipped) square of side ⌊size/2 + ½⌋, color moves a constant image only by
the brightness offset, gradients flow to the input, and bad policies are one-line config errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency.objectives import augment


def images(n=64, size=8):
    return jnp.arange(n * size * size, dtype=jnp.float32).reshape(n, size, size, 1) + 1.0


def shifted(image, dy, dx):
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[i, j] = image[i - dy, j - dx]
    return out


def test_translation_is_a_zero_filled_shift_of_at_most_one_pixel_on_8x8():
    x = np.asarray(images())
    y = np.asarray(augment.translation(jax.random.PRNGKey(0), jnp.asarray(x)))
    seen = set()
    for a, b in zip(x, y):
        match = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if np.array_equal(shifted(a, dy, dx), b)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == 9   # every shift occurs over 64 draws


def test_cutout_zeroes_one_clipped_square_of_half_the_side():
    x = jnp.ones((256, 8, 8, 1))
    y = np.asarray(augment.cutout(jax.random.PRNGKey(1), x))[..., 0]
    areas = []
    for image in y:
        rows, cols = np.nonzero(image == 0)
        assert len(rows) > 0
        box = (rows.min(), rows.max(), cols.min(), cols.max())
        assert (box[1] - box[0] + 1) * (box[3] - box[2] + 1) == len(rows)       # a rectangle …
        assert box[1] - box[0] < 4 and box[3] - box[2] < 4                     # … within a 4×4 square
        areas.append(len(rows))
    assert max(areas) == 16 and min(areas) < 16                                 # whole and clipped squares occur


def test_color_moves_a_constant_image_only_by_the_brightness_offset():
    x = jnp.full((128, 8, 8, 1), 0.25)
    y = np.asarray(augment.color(jax.random.PRNGKey(2), x))
    offsets = y[:, 0, 0, 0] - 0.25
    np.testing.assert_allclose(y, np.broadcast_to(0.25 + offsets[:, None, None, None], y.shape), atol=1e-6)   # still constant per image
    assert np.all(np.abs(offsets) <= 0.5) and offsets.std() > 0.2                  # U(−0.5, 0.5): std 0.289


def test_gradients_reach_the_input_through_every_transform():
    x = images(8)
    policy = augment.parse_policy("color,translation,cutout")
    grad = jax.grad(lambda v: jnp.sum(augment.diff_augment(jax.random.PRNGKey(3), v, policy) ** 2))(x)
    assert np.all(np.isfinite(grad)) and np.count_nonzero(np.asarray(grad)) > 0.3 * grad.size
    cut = jax.grad(lambda v: jnp.sum(augment.cutout(jax.random.PRNGKey(4), v)))(x)
    np.testing.assert_array_equal(np.asarray(cut), np.asarray(augment.cutout(jax.random.PRNGKey(4), jnp.ones_like(x))))


def test_empty_policy_is_the_identity_and_unknown_names_are_refused():
    x = images(4)
    np.testing.assert_array_equal(np.asarray(augment.diff_augment(jax.random.PRNGKey(0), x, ())), np.asarray(x))
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.parse_policy("translation,flip")


@pytest.mark.parametrize("data,policy,match", [
    ("toy:8gaussians", "translation", r"^config\.add\.augment: 'translation' augments images"),
    ("digits", "rotate", r"^config\.add\.augment: unknown augmentation \['rotate'\]"),
])
def test_bad_augment_fields_are_one_line_config_errors(data, policy, match):
    from consistency import presets
    from consistency.core.errors import ConfigError
    from consistency.methods.components import discriminator
    c = presets.new("add")
    c.data.name = data
    c.add.augment = policy
    with pytest.raises(ConfigError, match=match) as error:
        discriminator.validate_augment(c, "add.augment")
    assert "\n" not in str(error.value)
