"""Evaluates a checkpoint: top-1/top-5 and loss over a split, center crop or 10-crop.

  python evaluate.py --workdir=runs/default [--step=N | --best] [--split=S] [--crops=1|10]
      [--ema] [--image_size=224] [--resize=232]
  python evaluate.py --config=configs/resnet20_cifar10.py --checkpoint=runs/r20/checkpoints/64000
  python evaluate.py --config=configs/resnet50_imagenet.py --weights=weights/resnet50.safetensors \
      --resize=232   # a weight file as it is, e.g. torchvision's V2 ResNet-50 at its settings

Writes workdir/eval/<split>_<step>[...].json (not for --weights) and prints the same
metrics as one JSON object on the last line of stdout.
"""

import json

from absl import flags

from resnet_jax import cli
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags():
  cli.define_config_flag()
  flags.DEFINE_string('workdir', None, 'A run directory (uses its config.json).')
  flags.DEFINE_string('checkpoint', None, 'A checkpoint step directory (or run).')
  flags.DEFINE_string(
    'weights', None, 'A weight file (pretrained.source layout, classifier included) instead.'
  )
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
  flags.DEFINE_bool('best', False, 'The checkpoint with the best eval top-1.')
  flags.DEFINE_string('split', None, 'Split to evaluate (default: config.data.eval_split).')
  flags.DEFINE_enum('crops', '1', ['1', '10'], 'Center crop, or the 10-crop of the paper.')
  flags.DEFINE_bool('ema', False, 'The moving average of the weights (optim.ema_decay > 0).')
  flags.DEFINE_integer('image_size', 0, "Evaluation resolution (default: the config's).")
  flags.DEFINE_integer(
    'resize', 0, "Shorter side before the center crop (default: the config's, or size*256/224)."
  )


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if sum(map(bool, (FLAGS.workdir, FLAGS.checkpoint, FLAGS.weights))) != 1:
    raise ConfigError('pass exactly one of --workdir, --checkpoint and --weights')
  if FLAGS.best and FLAGS.step is not None:
    raise ConfigError('--step and --best exclude each other')
  from resnet_jax import evaluator  # Here, not above: a mistyped flag fails before TF loads.

  if FLAGS.weights:
    print(json.dumps(_evaluate_weights_file(evaluator)), flush=True)
    return
  result = evaluator.evaluate(
    FLAGS.config,
    FLAGS.workdir or FLAGS.checkpoint,
    step=FLAGS.step,
    best=FLAGS.best,
    split=FLAGS.split,
    crops=int(FLAGS.crops),
    ema=FLAGS.ema,
    eval_image_size=FLAGS.image_size,
    eval_resize=FLAGS.resize,
  )
  print(json.dumps(result), flush=True)


def _evaluate_weights_file(evaluator) -> dict:
  if FLAGS.config is None:
    raise ConfigError('--weights needs --config: the network and dataset to evaluate it on')
  for name in ('step', 'best', 'ema'):
    if FLAGS[name].present:
      raise ConfigError(f'--{name} is for checkpoints: a weight file has one set of weights')
  config = FLAGS.config.copy_and_resolve_references()
  config.pretrained.weights = FLAGS.weights
  return evaluator.evaluate_weights_file(
    config,
    split=FLAGS.split,
    crops=int(FLAGS.crops),
    eval_image_size=FLAGS.image_size,
    eval_resize=FLAGS.resize,
  )


def run():
  define_flags()
  cli.run(main)


if __name__ == '__main__':
  run()
