"""What a run starts from: the whole config checked, the dataset's info, the initial state,
and a checkpoint restored into it.

The training loop (`trainer`), evaluation of a checkpoint (`evaluator.evaluate`) and the
analyses share this set-up; it imports neither of them.
"""

import dataclasses

import jax
import ml_collections

from resnet_jax import checkpoint, compiler, data, inputs, mixing, optim, parallel, train_state
from resnet_jax.data.splits import DatasetInfo
from resnet_jax.errors import ConfigError
from resnet_jax.models import layout, network_spec
from resnet_jax.pretrained import finetune

ON_NONFINITE = ('stop', 'skip')


def check_config(config: ml_collections.ConfigDict, mesh, *, pretrained_weights=True) -> None:
  """A ConfigError for the first value of any section that cannot work, before a dataset
  is opened or a model built. Each section is checked by the module that reads it; the
  train section, which the loop reads, and the checks across sections are here.
  `pretrained_weights=False`: the weight file is not read (a checkpoint replaces it), so it
  need not exist any more."""
  spec = network_spec(config.model, platform=parallel.platform(mesh))
  data.check_config(config.data)
  mixing.check_config(config.data)
  _check_train(config.train)
  devices = mesh.devices.size
  for name in ('batch_size', 'eval_batch_size'):  # Global batches, sharded over the devices.
    if config.train[name] % devices:
      raise ConfigError(
        f'train.{name}={config.train[name]} does not split over {devices} devices; '
        f'use a multiple of {devices}'
      )
  accum = config.train.grad_accum_steps
  if config.train.batch_size % (accum * devices):
    raise ConfigError(
      f'train.batch_size={config.train.batch_size} does not split into '
      f'train.grad_accum_steps={accum} micro-batches over {devices} devices; '
      f'use a multiple of {accum * devices}'
    )
  micro_batch, group = config.train.batch_size // accum, config.model.bn_group_size
  if 0 < group < micro_batch and micro_batch % group:
    batch = f'train.batch_size={config.train.batch_size}'
    batch += f' / train.grad_accum_steps={accum}' if accum > 1 else ''
    raise ConfigError(
      f'{batch} does not divide into BatchNorm groups of '
      f'model.bn_group_size={group}: use a multiple of it, or bn_group_size=0 (whole batch)'
    )
  optim.check_config(config.optim)
  finetune.check_config(config.pretrained, spec, load_weights=pretrained_weights)


def _check_train(train: ml_collections.ConfigDict) -> None:
  if train.on_nonfinite not in ON_NONFINITE:
    raise ConfigError(f'train.on_nonfinite={train.on_nonfinite!r}: use {" or ".join(ON_NONFINITE)}')
  if train.num_steps <= 0 and train.num_epochs <= 0:
    raise ConfigError('train.num_steps and train.num_epochs are both 0: nothing to train')
  for name in ('log_every', 'eval_every', 'checkpoint_every'):
    if train[name] < 0:
      raise ConfigError(f'train.{name}={train[name]}: expected >= 0 (0 = at the last step only)')
  if train.eval_batch_size < 0:
    raise ConfigError(
      f'train.eval_batch_size={train.eval_batch_size}: expected >= 0 (0 = batch_size)'
    )
  if train.batch_size < 1:
    raise ConfigError(f'train.batch_size={train.batch_size}: expected >= 1')
  if not isinstance(train.num_seeds, int) or train.num_seeds < 1:
    raise ConfigError(
      f'train.num_seeds={train.num_seeds!r}: expected a positive integer (1 = one run)'
    )
  if not isinstance(train.grad_accum_steps, int) or train.grad_accum_steps < 1:
    raise ConfigError(
      f'train.grad_accum_steps={train.grad_accum_steps!r}: expected a positive integer (1 = off)'
    )
  if train.keep_checkpoints < 1:
    raise ConfigError(f'train.keep_checkpoints={train.keep_checkpoints}: expected >= 1')
  compiler.check_config(train.cpu_options)


@dataclasses.dataclass(frozen=True)
class Setup(train_state.Start):
  """Everything derived from the config before the first step: the Start, and the
  dataset's info it was made from."""

  info: DatasetInfo


def setup(config: ml_collections.ConfigDict, mesh, *, pretrained_weights: bool = True) -> Setup:
  """The config checked, the dataset's info, then train_state.initialize from it
  (parameters from config.seed, or config.pretrained.weights; `pretrained_weights=False`
  skips reading that file, for a state that a checkpoint replaces)."""
  check_config(config, mesh, pretrained_weights=pretrained_weights)
  info = inputs.dataset_info(config)
  steps_per_epoch = max(info.num_train_examples // config.train.batch_size, 1)
  start = train_state.initialize(
    config,
    mesh,
    num_classes=info.num_classes,
    in_channels=info.num_channels,
    steps_per_epoch=steps_per_epoch,
    pretrained_weights=pretrained_weights,
  )
  fields = {field.name: getattr(start, field.name) for field in dataclasses.fields(start)}
  return Setup(**fields, info=info)


def restore_checkpoint(ckpt: checkpoint.Checkpointer, state, config, step=None):
  """(state, meta) of a checkpoint, in the layout and shardings of `state`, a fresh TrainState
  of `config`.

  Checkpoints hold one entry per unit (`checkpoint_layout`), whatever `model.scan`
  was, so runs resume and evaluate with it on or off.
  """
  restored, meta = ckpt.restore(checkpoint_layout(state, config), step)
  stacked = lambda tree: layout.to_stacked(tree, config.model)
  restored = train_state.map_seeds(stacked, restored, config.train.num_seeds)
  return jax.tree.map(lambda x, like: jax.device_put(x, like.sharding), restored, state), meta


def checkpoint_layout(state: train_state.TrainState, config) -> train_state.TrainState:
  """The state as checkpoints hold it: one entry per unit (`layout.to_per_unit`), of each
  seed where the run trains several (train.num_seeds)."""
  return train_state.map_seeds(layout.to_per_unit, state, config.train.num_seeds)
