"""resnet_jax.mixing: mixup and CutMix of a batch, their coefficients and their targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import defaults, mixing
from resnet_jax.errors import ConfigError

BATCH, SIZE, CLASSES = 6, 16, 5


def _batch():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32)
  targets = jax.nn.one_hot(rng.permutation(BATCH) % CLASSES, CLASSES)
  return jnp.asarray(images), targets


def _pasted(images, mixed):
  """Per draw and pixel: True where the image is its partner's (example B-1-i), False where
  its own; anything else fails."""
  own = np.isclose(mixed, images, atol=1e-6).all(axis=-1)
  partner = np.isclose(mixed, images[::-1], atol=1e-6).all(axis=-1)
  np.testing.assert_array_equal(own ^ partner, True)  # each pixel is one or the other
  return partner


def _draws(mix_config: mixing.Mixing, n: int):
  """(images, targets, mixed images, mixed targets) for n keys, the batch the same."""
  images, targets = _batch()
  keys = jax.random.split(jax.random.key(0), n)
  mixed, mixed_targets = jax.jit(
    jax.vmap(lambda key: mixing.mix(key, images, targets, mix_config))
  )(keys)
  return images, targets, mixed, mixed_targets


def _lam(targets, mixed_targets):
  """The coefficient of each draw, from the targets: t' = lam t + (1 - lam) reversed."""
  own, partner = targets[0].argmax(), targets[-1].argmax()
  assert own != partner
  return np.asarray(mixed_targets[:, 0, own])


def test_mixup_blends_each_image_with_the_reversed_batch_by_a_beta_coefficient():
  images, targets, mixed, mixed_targets = _draws(mixing.Mixing(mixup_alpha=0.4), 2000)
  lam = _lam(targets, mixed_targets)
  lam_b = lam[:, None, None, None, None]
  np.testing.assert_allclose(mixed, lam_b * images + (1 - lam_b) * images[::-1], atol=1e-5)
  expected = lam[:, None, None] * targets + (1 - lam)[:, None, None] * targets[::-1]
  np.testing.assert_allclose(mixed_targets, expected, atol=1e-6)
  # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.139.
  assert abs(lam.mean() - 0.5) < 0.03 and abs(lam.var() - 1 / 7.2) < 0.015


def test_cutmix_pastes_a_box_and_weighs_the_targets_by_its_area():
  images, targets, mixed, mixed_targets = _draws(mixing.Mixing(cutmix_alpha=1.0), 500)
  lam = _lam(targets, mixed_targets)
  pasted = _pasted(images, mixed)
  assert (pasted == pasted[:, :1]).all()  # the same box in every example
  np.testing.assert_allclose(pasted[:, 0].mean(axis=(1, 2)), 1 - lam, atol=1e-6)
  rows, cols = pasted[:, 0].any(axis=2), pasted[:, 0].any(axis=1)
  np.testing.assert_array_equal(pasted[:, 0], rows[:, :, None] & cols[:, None, :])  # a rectangle
  # Beta(1, 1) box sides sqrt(1 - lam) of the image's before clipping: areas spread widely.
  assert lam.min() < 0.4 and lam.max() == 1.0 and 0.55 < lam.mean() < 0.8


@pytest.mark.parametrize('switch_prob', [0.2, 0.5])
def test_with_both_a_batch_is_cutmix_with_the_switch_probability(switch_prob):
  config = mixing.Mixing(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob)
  images, targets, mixed, mixed_targets = _draws(config, 1000)
  lam = _lam(targets, mixed_targets)
  own = np.isclose(mixed, images, atol=1e-6).all(axis=-1)
  partner = np.isclose(mixed, images[::-1], atol=1e-6).all(axis=-1)
  cutmix = (own ^ partner).all(axis=(1, 2, 3)) & (lam > 0) & (lam < 1)
  assert abs(cutmix.mean() - switch_prob) < 0.05


def test_the_mix_is_a_function_of_the_key():
  images, targets = _batch()
  config = mixing.Mixing(mixup_alpha=0.2, cutmix_alpha=1.0)
  one = mixing.mix(jax.random.key(1), images, targets, config)
  again = mixing.mix(jax.random.key(1), images, targets, config)
  other = mixing.mix(jax.random.key(2), images, targets, config)
  jax.tree.map(np.testing.assert_array_equal, one, again)
  assert not np.array_equal(one[0], other[0])


def test_bfloat16_images_stay_bfloat16():
  images, targets = _batch()
  mixed, _ = mixing.mix(
    jax.random.key(0), images.astype(jnp.bfloat16), targets, mixing.Mixing(mixup_alpha=1.0)
  )
  assert mixed.dtype == jnp.bfloat16


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('mixup_alpha', -0.1, r'data.mixup_alpha=-0.1: expected >= 0 \(0 = off\)'),
    ('cutmix_alpha', -1.0, r'data.cutmix_alpha=-1.0: expected >= 0'),
    ('mix_switch_prob', 1.5, r'data.mix_switch_prob=1.5: expected in \[0, 1\]'),
  ],
)
def test_bad_values_are_config_errors(field, value, message):
  config = defaults.get_config()
  config.data[field] = value
  with pytest.raises(ConfigError, match=message):
    mixing.check_config(config.data)
