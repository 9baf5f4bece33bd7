"""Evaluates a checkpoint: top-1/top-5 and loss over a split, center crop or 10-crop.

  python evaluate.py --workdir=runs/default [--step=N | --best] [--split=S] [--crops=1|10]
  python evaluate.py --config=configs/resnet20_cifar10.py --checkpoint=runs/r20/checkpoints/64000

Writes workdir/eval/<split>_<step>.json and prints the same metrics as one JSON
object on the last line of stdout.
"""

import json

from absl import flags

from resnet_jax import cli

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string('workdir', None, 'A run directory (uses its config.json).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'A checkpoint step directory (or run).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
_BEST = flags.DEFINE_bool('best', False, 'The checkpoint with the best eval top-1.')
_SPLIT = flags.DEFINE_string('split', None, 'Split to evaluate (default: config.data.eval_split).')
_CROPS = flags.DEFINE_enum('crops', '1', ['1', '10'], 'Center crop, or the 10-crop of the paper.')


def main(argv):
  if len(argv) > 1:
    raise cli.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
    raise cli.ConfigError('pass exactly one of --workdir and --checkpoint')
  if _BEST.value and _STEP.value is not None:
    raise cli.ConfigError('--step and --best exclude each other')
  from resnet_jax import evaluator  # Here, not above: a mistyped flag fails before TF loads.

  try:
    result = evaluator.evaluate(
      _CONFIG.value,
      _WORKDIR.value or _CHECKPOINT.value,
      step=_STEP.value,
      best=_BEST.value,
      split=_SPLIT.value,
      crops=int(_CROPS.value),
    )
  except (FileNotFoundError, ValueError) as e:  # No checkpoint; an unknown split; ...
    raise cli.ConfigError(str(e)) from e
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  cli.run(main)
