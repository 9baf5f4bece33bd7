"""Training images/s fed by tf.data against the split held on the devices, and of several
seeds trained at once, in one run.

  python -m benchmarks.device_pipeline [--steps 40] [--seeds 1,4,16] [--set KEY=VALUE ...]

The `make train` network and data (configs/resnet20_fashion_mnist.py: ResNet-20, batch
128, Fashion-MNIST, which must be prepared) trained by train.py's step, compiled as train.py
compiles it, three ways: data.pipeline='tfdata' (tf.data decodes, crops and flips on the
host, each batch copied to the devices), data.pipeline='device' (the step gathers, crops
and flips its batch from the uint8 split on the devices), and the step alone on one batch
already on the devices (what the step costs without any input). Each is timed over
`--steps` steps after three warm-up steps, from the first step's start to the last one's
result (so tf.data's stalls count), and given as a multiple of the tf.data rate. Then the
device pipeline with train.num_seeds = K for each K of `--seeds` (`--steps` / K steps, at
least 3): images/s of all seeds together, per seed, and the compile time. Prints two
tables, then one JSON line.
"""

import argparse
import json
import os
import time

import jax

from configs import resnet20_fashion_mnist
from resnet_jax import experiment, inputs, parallel, train_state
from resnet_jax.analysis import grid

WARMUP_STEPS = 3


def images_per_second(config, pipeline: str, steps: int, *, step_only=False, seeds=1) -> dict:
  """{'images_per_s', 'compile_s'} of `steps` train steps fed as `pipeline` says (images of
  all `seeds`); with `step_only`, every step is fed the pipeline's first batch again."""
  overrides = (('data.pipeline', pipeline), ('train.num_seeds', str(seeds)))
  config = grid.apply(config, grid.Point('', overrides))
  mesh = parallel.create_mesh()
  start = experiment.setup(config, mesh)
  train = inputs.train_inputs(config, mesh, start_step=0)
  step = train_state.train_step(config, start, mesh, train.batch_from)
  state, first = start.state, next(train.stream)
  feed = (lambda: first) if step_only else (lambda: next(train.stream))
  compile_start = time.perf_counter()
  state, step_metrics = step(state, first)
  jax.block_until_ready(step_metrics)
  compile_seconds = time.perf_counter() - compile_start
  for _ in range(WARMUP_STEPS):
    state, step_metrics = step(state, feed())
  jax.block_until_ready(step_metrics)
  begin = time.perf_counter()
  for _ in range(steps):
    state, step_metrics = step(state, feed())
  jax.block_until_ready(step_metrics)
  seconds = time.perf_counter() - begin
  return {
    'images_per_s': seeds * steps * config.train.batch_size / seconds,
    'compile_s': compile_seconds,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--seeds', default='1,4,16', help='train.num_seeds values to time')
  parser.add_argument(
    '--set', action='append', default=[], metavar='KEY=VALUE', help='a config override (repeat)'
  )
  args = parser.parse_args()
  overrides = tuple(tuple(kv.split('=', 1)) for kv in args.set)
  config = grid.apply(resnet20_fashion_mnist.get_config(), grid.Point('', overrides))
  rows = {
    'tfdata': images_per_second(config, 'tfdata', args.steps),
    'device': images_per_second(config, 'device', args.steps),
    'step only': images_per_second(config, 'tfdata', args.steps, step_only=True),
  }
  base = rows['tfdata']['images_per_s']
  device = jax.devices()[0]
  print(
    f'ResNet-{config.model.depth}, batch {config.train.batch_size}, {config.data.dataset}, '
    f'{len(jax.devices())} x {device.platform} {device.device_kind}, '
    f'load average {os.getloadavg()[0]:.1f}'
  )
  print(f'{"feed":<12} {"img/s":>9} {"x tfdata":>9} {"compile s":>10}')
  for name, row in rows.items():
    ratio = row['images_per_s'] / base
    print(f'{name:<12} {row["images_per_s"]:>9.1f} {ratio:>9.2f} {row["compile_s"]:>10.1f}')
  seed_rows = {
    k: images_per_second(config, 'device', max(args.steps // k, 3), seeds=k)
    for k in map(int, args.seeds.split(','))
  }
  print(f'{"num_seeds":<12} {"img/s":>9} {"per seed":>9} {"compile s":>10}')
  for k, row in seed_rows.items():
    per_seed = row['images_per_s'] / k
    print(f'{k:<12} {row["images_per_s"]:>9.1f} {per_seed:>9.1f} {row["compile_s"]:>10.1f}')
  print(
    json.dumps(
      {'steps': args.steps, 'overrides': dict(overrides), 'rows': rows, 'seeds': seed_rows}
    )
  )


if __name__ == '__main__':
  main()
