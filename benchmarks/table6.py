"""The wall time of CIFAR-10 Table 6 with error bars (He et al. 2015: ResNet-20 ... 1202 and
the plain nets, 64k iterations each, K seeds per network), estimated from timed steps here.

  python -m benchmarks.table6 [--seeds 5] [--networks 20,32,...,plain20,...] [--steps 20]

Each network is configs/resnet_cifar10.py's, trained by train.py's step with
data.pipeline='device' and train.num_seeds=K: the split on the devices, K runs in one
step. Its data are CIFAR-10-shaped random images written in CIFAR-10's own file format
(data.original_dir), so nothing is downloaded and neither TensorFlow nor TFDS is needed.
A network's time is 64,000 x its step's seconds (timed over --steps steps after warm-up,
as benchmarks.device_pipeline times them); evaluation, 10,000 images every 2,000 steps,
is left out (about 1% of the images a run processes, forward only). `--seeds 1,4,16`
times each network at each K: the per-seed cost of stacking runs. A network that does
not fit in memory is reported so and left out of the total. Prints a table, then one
JSON line.
"""

import argparse
import json
import os
import pickle
import tempfile

import jax
import numpy as np

from benchmarks.device_pipeline import images_per_second
from configs import resnet_cifar10
from resnet_jax.analysis import grid

PAPER_STEPS = 64_000
# Table 6's ResNets and Figure 6's plain nets.
NETWORKS = ('20', '32', '44', '56', '110', '1202', 'plain20', 'plain32', 'plain44', 'plain56')
CIFAR10_FILES = tuple(f'data_batch_{i}' for i in range(1, 6)) + ('test_batch',)


def write_random_cifar10(directory: str, examples_per_file: int) -> None:
  """CIFAR-10's python version (cifar-10-batches-py/: five train batches and a test batch,
  each a pickle of uint8 rows of 3,072 values and their labels) holding random images."""
  folder = os.path.join(directory, 'cifar-10-batches-py')
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  for name in CIFAR10_FILES:
    batch = {
      b'data': rng.integers(0, 256, (examples_per_file, 3072), np.uint8),
      b'labels': rng.integers(0, 10, examples_per_file).tolist(),
    }
    with open(os.path.join(folder, name), 'wb') as f:
      pickle.dump(batch, f)


def network_config(network: str, original_dir: str, overrides):
  depth = network.removeprefix('plain')
  config = resnet_cifar10.get_config(depth + (',plain' if network.startswith('plain') else ''))
  config.data.original_dir = original_dir
  return grid.apply(config, grid.Point('', tuple(overrides)))


def timed(config, steps: int, seeds: int) -> dict:
  """images_per_second's row with the step's seconds and the hours of PAPER_STEPS; for a
  network that does not fit, {'error': 'out of memory'}."""
  try:
    row = images_per_second(config, 'device', steps, seeds=seeds)
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    return {'error': 'out of memory'}
  step_s = seeds * config.train.batch_size / row['images_per_s']
  return {**row, 'step_ms': 1e3 * step_s, 'hours': PAPER_STEPS * step_s / 3600}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--seeds', default='5', help='train.num_seeds values (K) to time')
  parser.add_argument('--networks', default=','.join(NETWORKS), help='depths, plainDEPTH')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument(
    '--examples', type=int, default=10_000, help='per CIFAR-10 file (6 files; 10,000 as theirs)'
  )
  parser.add_argument(
    '--set', action='append', default=[], metavar='KEY=VALUE', help='a config override (repeat)'
  )
  args = parser.parse_args()
  overrides = [tuple(kv.split('=', 1)) for kv in args.set]
  device = jax.devices()[0]
  print(
    f'{len(jax.devices())} x {device.platform} {device.device_kind}, batch 128 per seed, '
    f'{args.steps} timed steps, hours for {PAPER_STEPS:,} steps (eval not counted)'
  )
  print(f'{"network":<10} {"K":>3} {"step ms":>9} {"img/s":>9} {"compile s":>10} {"hours":>7}')
  rows, total, fitted = [], {}, {}
  with tempfile.TemporaryDirectory() as original_dir:
    write_random_cifar10(original_dir, args.examples)
    for network in args.networks.split(','):
      for seeds in map(int, args.seeds.split(',')):
        row = timed(network_config(network, original_dir, overrides), args.steps, seeds)
        rows.append({'network': network, 'seeds': seeds, **row})
        if 'error' in row:
          print(f'{network:<10} {seeds:>3} {row["error"]}')
          continue
        total[seeds] = total.get(seeds, 0.0) + row['hours']
        fitted[seeds] = fitted.get(seeds, 0) + 1
        print(
          f'{network:<10} {seeds:>3} {row["step_ms"]:>9.1f} {row["images_per_s"]:>9.0f} '
          f'{row["compile_s"]:>10.1f} {row["hours"]:>7.2f}'
        )
  for seeds, hours in total.items():
    print(f'{fitted[seeds]} networks that fitted, {seeds} seeds each: {hours:.2f} hours')
  print(json.dumps({'steps': args.steps, 'overrides': dict(overrides), 'rows': rows}))


if __name__ == '__main__':
  main()
