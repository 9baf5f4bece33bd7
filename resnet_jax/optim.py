"""The optax optimizer and learning-rate schedule that `config.optim` describes.

The base learning rate is per 256 images (the linear scaling rule of Goyal et
al. 2017): the rate used is `learning_rate * batch_size / 256`, so the CIFAR
recipe (0.1 at batch 128) is `learning_rate=0.2` and ImageNet's (0.1 at batch
256) is `learning_rate=0.1`.

Weight decay with SGD and LARS is the papers' L2 penalty: added to the gradient
before momentum (coupled). With AdamW and LAMB it is decoupled from the adaptive
step (Loshchilov & Hutter 2019), and scaled by the learning rate as in PyTorch,
optax and timm.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from resnet_jax import metrics
from resnet_jax.errors import ConfigError
from resnet_jax.models import layout

OPTIMIZERS = ('sgd', 'lars', 'adamw', 'lamb')
SCHEDULES = ('piecewise', 'cosine', 'constant')
WARMUPS = ('linear', 'constant')
BOUNDARY_UNITS = ('steps', 'epochs')
HEAD = 'head'  # the classifier's entry in the parameter tree (models.ResNet.head)


def check_config(config: ml_collections.ConfigDict) -> None:
  """A ConfigError for the first `config.optim` value that cannot work; the builders below
  take the section as checked."""
  for field, allowed in (
    ('optimizer', OPTIMIZERS),
    ('schedule', SCHEDULES),
    ('warmup', WARMUPS),
    ('boundaries_unit', BOUNDARY_UNITS),
  ):
    if config[field] not in allowed:
      raise ConfigError(f'optim.{field}={config[field]!r}: expected one of {", ".join(allowed)}')
  if list(config.boundaries) != sorted(config.boundaries):
    raise ConfigError(f'optim.boundaries={tuple(config.boundaries)} must be increasing')
  for field in ('learning_rate', 'weight_decay', 'grad_clip_norm', 'warmup_factor',
                'warmup_steps', 'warmup_epochs', 'backbone_lr_scale', 'decay_factor'):  # fmt: skip
    if config[field] < 0:
      raise ConfigError(f'optim.{field}={config[field]}: expected >= 0')
  if not 0 <= config.momentum < 1:
    raise ConfigError(f'optim.momentum={config.momentum}: expected in [0, 1)')
  if len(config.adam_betas) != 2 or not all(0 <= b < 1 for b in config.adam_betas):
    raise ConfigError(f'optim.adam_betas={tuple(config.adam_betas)}: expected two in [0, 1)')
  if config.adam_eps <= 0:
    raise ConfigError(f'optim.adam_eps={config.adam_eps}: expected > 0')
  if config.loss not in metrics.LOSSES:
    raise ConfigError(f'optim.loss={config.loss!r}: expected one of {", ".join(metrics.LOSSES)}')
  if not 0 <= config.bce_target_threshold < 1:
    raise ConfigError(
      f'optim.bce_target_threshold={config.bce_target_threshold}: expected in [0, 1) (0 = off)'
    )
  if not 0 <= config.ema_decay < 1:
    raise ConfigError(f'optim.ema_decay={config.ema_decay}: expected in [0, 1) (0 = no EMA)')
  if not isinstance(config.ema_every, int) or config.ema_every < 1:
    raise ConfigError(f'optim.ema_every={config.ema_every!r}: expected a positive integer')
  if not 0 <= config.label_smoothing < 1:
    raise ConfigError(f'optim.label_smoothing={config.label_smoothing}: expected in [0, 1)')


def scaled_learning_rate(config: ml_collections.ConfigDict, batch_size: int) -> float:
  """The peak rate after the linear scaling rule."""
  return config.learning_rate * batch_size / 256


def warmup_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`warmup_steps`, or `warmup_epochs` in steps when warmup_steps is 0."""
  if config.warmup_steps:
    return int(config.warmup_steps)
  return int(round(config.warmup_epochs * steps_per_epoch))


def create_learning_rate_schedule(
  config: ml_collections.ConfigDict, *, batch_size: int, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
  """Learning rate as a function of the step (0-based), from `config.optim`.

  Piecewise boundaries count from step 0 (the warmup is part of them), as the
  paper's "divide by 10 at 32k and 48k iterations" does. `optim.boundaries_unit`
  ('steps' or 'epochs') says what the boundaries count. The warmup is either
  linear, from `warmup_factor * rate` up to the rate, or constant at
  `warmup_factor * rate` (ResNet-110's 0.01 for 400 steps before 0.1).
  """
  base = scaled_learning_rate(config, batch_size)
  warmup = warmup_steps(config, steps_per_epoch)
  if config.schedule == 'constant':
    main = optax.constant_schedule(base)
  elif config.schedule == 'piecewise':
    scale = steps_per_epoch if config.boundaries_unit == 'epochs' else 1
    boundaries = [int(round(b * scale)) for b in config.boundaries]
    main = optax.piecewise_constant_schedule(base, {b: config.decay_factor for b in boundaries})
  else:  # cosine
    cosine = optax.cosine_decay_schedule(base, max(total_steps - warmup, 1))
    main = lambda step: cosine(step - warmup)
  if not warmup:
    return main

  factor = config.warmup_factor
  if config.warmup == 'linear':
    warm = optax.linear_schedule(factor * base, base, warmup)
  else:  # constant
    warm = optax.constant_schedule(factor * base)
  return lambda step: jnp.where(step < warmup, warm(step), main(step))


def _is_kernel(params):
  """Mask: True for kernels (convolutions, classifier), False for BN scales/offsets and biases.

  By name, not by rank: a scanned stage stores its units' BN scales stacked, so 2-D."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params
  )


def _scale_by_trust_ratio_per_unit(trust_coefficient: float) -> optax.GradientTransformation:
  """optax.scale_by_trust_ratio, one ratio per unit also where a scanned stage stacks its
  units' kernels (`layout.in_stacked_stage`): the ratios of the unrolled network."""
  per_array = optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient)
  scale = lambda update, param: per_array.update(update, optax.EmptyState(), param)[0]

  def scale_leaf(path, update, param):
    return jax.vmap(scale)(update, param) if layout.in_stacked_stage(path) else scale(update, param)

  def update_fn(updates, state, params):
    return jax.tree_util.tree_map_with_path(scale_leaf, updates, params), state

  return optax.GradientTransformation(per_array.init, update_fn)


def create_optimizer(
  config: ml_collections.ConfigDict, *, batch_size: int, steps_per_epoch: int, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) from `config.optim`.

  sgd: [clip by global norm] -> L2 weight decay -> SGD with (Nesterov) momentum.
  lars: [clip] -> LARS (You et al. 2017); the trust ratio never applies to
  BN parameters or biases, the usual choice, and is one per unit in scanned stages too.
  adamw: [clip] -> optax.adamw (`adam_betas`, `adam_eps`, decoupled weight decay).
  lamb: [clip] -> LAMB (You et al. 2020): Adam, decoupled weight decay, then the
  trust ratio |w| / |update| wherever weight decay applies (as timm's Lamb, which
  "ResNet strikes back" trains with), one per unit in scanned stages too.
  `optim.grad_clip_norm` > 0 clips the gradient's global norm first.
  `optim.backbone_lr_scale` != 1 scales the updates of everything but the classifier
  (fine-tuning); 0 freezes it.
  """
  schedule = create_learning_rate_schedule(
    config, batch_size=batch_size, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )
  decay_mask = True if config.decay_bn_and_bias else _is_kernel
  parts = []
  clip = config.grad_clip_norm
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  update = []
  if config.optimizer == 'sgd':
    if config.weight_decay:
      update.append(optax.add_decayed_weights(config.weight_decay, mask=decay_mask))
    update.append(optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
  elif config.optimizer == 'adamw':
    b1, b2 = config.adam_betas
    update.append(
      optax.adamw(
        schedule, b1=b1, b2=b2, eps=config.adam_eps, weight_decay=config.weight_decay,
        mask=decay_mask,
      )
    )  # fmt: skip
  elif config.optimizer == 'lamb':  # optax.lamb, with the trust ratio where decay applies
    b1, b2 = config.adam_betas
    trust = _scale_by_trust_ratio_per_unit(1.0)
    update.append(
      optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=config.adam_eps),
        optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
        trust if config.decay_bn_and_bias else optax.masked(trust, _is_kernel),
        optax.scale_by_learning_rate(schedule),
      )
    )
  else:  # optax.lars, with the trust ratio of each unit of a scanned stage its own
    update.append(
      optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
        optax.masked(_scale_by_trust_ratio_per_unit(config.lars_trust_coefficient), _is_kernel),
        optax.scale_by_learning_rate(schedule),
        optax.trace(decay=config.momentum, nesterov=config.nesterov),
      )
    )
  if config.backbone_lr_scale != 1:  # (a flat chain otherwise: checkpoints keep their layout)
    update = [_with_backbone_rate(optax.chain(*update), config.backbone_lr_scale)]
  return optax.chain(*parts, *update), schedule


def _with_backbone_rate(tx: optax.GradientTransformation, scale: float):
  """`tx` for the classifier (the parameters under `HEAD`); for all others `tx`'s updates
  times `scale`, or, at 0, no update, no weight decay and no optimizer state at all."""
  backbone = optax.set_to_zero() if scale == 0 else optax.chain(tx, optax.scale(scale))
  labels = lambda params: {name: 'head' if name == HEAD else 'backbone' for name in params}
  return optax.multi_transform({'head': tx, 'backbone': backbone}, labels)


def total_steps(train_config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """train.num_steps when > 0, else train.num_epochs in steps (rounded up)."""
  if train_config.num_steps > 0:
    return int(train_config.num_steps)
  return int(math.ceil(train_config.num_epochs * steps_per_epoch))
