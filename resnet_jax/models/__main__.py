"""Prints a network's per-stage table, its parameters and its multiply-adds per image.

python -m resnet_jax.models --config=configs/resnet50_imagenet.py
python -m resnet_jax.models --config=configs/resnet20_cifar10.py --config.model.depth=110
"""

from absl import flags
from flax import nnx

from resnet_jax import cli
from resnet_jax.models.resnet import NetworkSpec, create_model
from resnet_jax.models.summary import format_table, summarize

_CONFIG = cli.define_config_flag()
_NUM_CLASSES = flags.DEFINE_integer(
  'num_classes', None, 'Classes of the head (default: 1000 for the ImageNet stem, else 10).'
)
_IN_CHANNELS = flags.DEFINE_integer('in_channels', 3, 'Channels of the input images.')
flags.mark_flag_as_required('config')


def describe(model_config, spec: NetworkSpec) -> str:
  """A one-line name such as 'ResNet-50 (imagenet stem, bottleneck units, shortcut B, v1, ...)'."""
  kind = 'Plain' if spec.unit.shortcut == 'none' else 'ResNet'
  return (
    f'{kind}-{model_config.depth} ({spec.stem} stem, {spec.unit.block} units, '
    f'shortcut {spec.unit.shortcut}, {spec.unit.variant}, width {spec.width}, '
    f'{model_config.dtype})'
  )


def main(argv):
  del argv
  config = _CONFIG.value
  num_classes = _NUM_CLASSES.value or (1000 if config.model.stem == 'imagenet' else 10)
  size = config.data.image_size
  try:
    model = create_model(
      config.model,
      num_classes=num_classes,
      in_channels=_IN_CHANNELS.value,
      rngs=nnx.Rngs(config.seed),
    )
  except ValueError as e:
    raise cli.ConfigError(f'config.model: {e}') from e
  print(
    f'{describe(config.model, model.spec)} on {size}x{size}x{_IN_CHANNELS.value} images, '
    f'{num_classes} classes'
  )
  print(format_table(summarize(model, (size, size, _IN_CHANNELS.value))))


if __name__ == '__main__':
  cli.run(main)
