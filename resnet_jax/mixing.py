"""mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training batch, on the device.

Inside the jit-compiled train step, from the step's key: the mixed batch is a pure
function of (run seed, step) like the batch itself, so a resumed run mixes exactly as an
uninterrupted one. As timm's `Mixup(mode='batch')`, one mixing coefficient per batch;
example i is mixed with example B-1-i (the batch reversed), and the targets as the pixels
are: for CutMix, by the area of the box actually pasted after clipping it to the image.

Both are one blend, image * w + reversed * (1 - w): w is the coefficient everywhere
(mixup) or 0 inside the box and 1 outside (CutMix), so switching costs no second pass.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from resnet_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Mixing:
  """config.data's mixup_alpha, cutmix_alpha (0 = off) and mix_switch_prob (the chance of
  CutMix when both are on)."""

  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  switch_prob: float = 0.5

  @classmethod
  def from_config(cls, data_config: ml_collections.ConfigDict) -> 'Mixing':
    return cls(data_config.mixup_alpha, data_config.cutmix_alpha, data_config.mix_switch_prob)

  @property
  def enabled(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def check_config(data_config: ml_collections.ConfigDict) -> None:
  for field in ('mixup_alpha', 'cutmix_alpha'):
    if data_config[field] < 0:
      raise ConfigError(f'data.{field}={data_config[field]}: expected >= 0 (0 = off)')
  if not 0 <= data_config.mix_switch_prob <= 1:
    raise ConfigError(f'data.mix_switch_prob={data_config.mix_switch_prob}: expected in [0, 1]')


def mix(
  key: jax.Array, images_bhwc: jax.Array, targets_bk: jax.Array, mixing: Mixing
) -> tuple[jax.Array, jax.Array]:
  """(mixed images, mixed targets) of a batch; `targets_bk` are probabilities (one-hot,
  maybe smoothed)."""
  choice_key, mixup_key, cutmix_key, box_key = jax.random.split(key, 4)
  _, height, width, _ = images_bhwc.shape
  if mixing.mixup_alpha > 0 and mixing.cutmix_alpha > 0:
    use_cutmix = jax.random.bernoulli(choice_key, mixing.switch_prob)
  else:
    use_cutmix = jnp.asarray(mixing.cutmix_alpha > 0)
  mixup_lam = _beta(mixup_key, mixing.mixup_alpha)
  inside_hw, box_area = _box(box_key, _beta(cutmix_key, mixing.cutmix_alpha), height, width)
  weight_hw = jnp.where(use_cutmix, jnp.where(inside_hw, 0.0, 1.0), mixup_lam)
  lam = jnp.where(use_cutmix, 1 - box_area / (height * width), mixup_lam)

  weight_hw1 = weight_hw[:, :, None].astype(images_bhwc.dtype)
  images_bhwc = images_bhwc * weight_hw1 + images_bhwc[::-1] * (1 - weight_hw1)
  return images_bhwc, lam * targets_bk + (1 - lam) * targets_bk[::-1]


def _beta(key: jax.Array, alpha: float) -> jax.Array:
  """A draw of Beta(alpha, alpha); 1 (keep the image) where alpha is 0."""
  return jax.random.beta(key, alpha, alpha) if alpha > 0 else jnp.ones(())


def _box(key: jax.Array, lam: jax.Array, height: int, width: int):
  """timm's rand_bbox: a box of sides sqrt(1 - lam) x the image's, centred anywhere, clipped
  to the image. ([H, W] True inside, its area in pixels)."""
  cut = jnp.sqrt(1 - lam)
  half_h = (height * cut).astype(jnp.int32) // 2
  half_w = (width * cut).astype(jnp.int32) // 2
  y_key, x_key = jax.random.split(key)
  cy = jax.random.randint(y_key, (), 0, height)
  cx = jax.random.randint(x_key, (), 0, width)
  y0, y1 = jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height)
  x0, x1 = jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside_hw = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  return inside_hw, (y1 - y0) * (x1 - x0)
