"""Prints a network's per-stage table, its parameters and its multiply-adds per image.

python -m resnet_jax.models --config=configs/resnet50_imagenet.py
python -m resnet_jax.models --config=configs/resnet20_cifar10.py --config.model.depth=110
"""

from absl import flags
from flax import nnx

from resnet_jax import cli
from resnet_jax.models.resnet import NetworkSpec, create_model
from resnet_jax.models.summary import format_table, summarize

FLAGS = flags.FLAGS


def define_flags():
  cli.define_config_flag()
  flags.DEFINE_integer(
    'num_classes',
    None,
    'Classes of the head (default: 1000 for the ImageNet stem, else 10).',
    lower_bound=1,
  )
  flags.DEFINE_integer('in_channels', 3, 'Channels of the input images.', lower_bound=1)
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
  config = FLAGS.config
  num_classes = FLAGS.num_classes or (1000 if config.model.stem == 'imagenet' else 10)
  size, channels = config.data.image_size, FLAGS.in_channels
  model = create_model(
    config.model, num_classes=num_classes, in_channels=channels, rngs=nnx.Rngs(config.seed)
  )
  print(
    f'{describe(config.model, model.spec)} on {size}x{size}x{channels} images, '
    f'{num_classes} classes'
  )
  print(format_table(summarize(model, (size, size, channels))))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
