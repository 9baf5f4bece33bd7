"""Train-step and eval-step throughput of our jit-compiled step, side by side with PyTorch.

  python -m benchmarks.train_step --model=resnet50              # ImageNet shapes, batch 32 at 224
  python -m benchmarks.train_step --model=resnet20 --mode=eval  # CIFAR shapes, batch 128 at 32
  python -m benchmarks.train_step --model=resnet20 --set data.mixup_alpha=0.2  # a config override

Ours is exactly what train.py runs (`train_state.train_step` / `eval_step`, from
`train_state.initialize`; on CPU compiled with the autotuned choice, or
`--cpu-options`) on random data already on the device. No dataset is read: with
--no-torch this needs neither TensorFlow, TFDS, tensorboard nor safetensors
(benchmarks/gpu_check.sh). PyTorch's is torchvision's ResNet (or the paper's CIFAR
ResNet with option A, written below) in channels_last with SGD + momentum, with as many
threads as cores. torch is a development requirement only: without it the torch column
is empty.
Median images/s after warm-up; compile seconds; the FLOPs of the step's
convolutions and matrix products and their rate as a fraction of the device's
matrix-multiply peak measured in the same run (float32 BLAS on a CPU; the step's
dtype on an accelerator).
Prints a table, then one JSON line.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import median_step_seconds
from configs import resnet_cifar10, resnet_imagenet
from resnet_jax import parallel, train_state
from resnet_jax.analysis import grid
from resnet_jax.models import summary

# name -> (config module, config argument, image size, default batch)
MODELS = {
  'resnet18': (resnet_imagenet, '18', 224, 32),
  'resnet50': (resnet_imagenet, '50', 224, 32),
  'resnet152': (resnet_imagenet, '152', 224, 32),
  'resnet20': (resnet_cifar10, '20', 32, 128),
  'resnet56': (resnet_cifar10, '56', 32, 128),
  'resnet110': (resnet_cifar10, '110', 32, 128),
  'resnet1202': (resnet_cifar10, '1202', 32, 128),
}
# config.model.stem -> (classes, training examples) of the dataset that network is for:
# the labels' range, and the epochs of the learning-rate schedule.
DATASETS = {'imagenet': (1000, 1_281_167), 'cifar': (10, 50_000)}


def gemm_peak_gflops(dtype: str, repeats: int = 5) -> float:
  """Matrix-multiply GFLOP/s of the device the step runs on, best of `repeats`: numpy's
  BLAS in float32 (2048^3) on a CPU, XLA's dot in `dtype` (8192^3) on an accelerator."""
  if jax.default_backend() == 'cpu':
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)

    def multiply():
      a @ a
  else:
    n = 8192
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)

    def multiply():
      matmul(a, a).block_until_ready()

    multiply()  # compiles
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    multiply()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best / 1e9


def benchmark_config(
  name: str, batch_size: int, model_fields: dict, cpu_options='autotune', overrides=()
):
  """The config of `name` on synthetic data, with `model_fields` set in config.model and
  `overrides` ((key, value) pairs as typed, e.g. ('optim.ema_decay', '0.999')) applied."""
  module, arg, size, _ = MODELS[name]
  config = grid.apply(module.get_config(arg), grid.Point('', tuple(overrides)))
  config.model.update(model_fields)
  config.data.dataset = 'synthetic'
  config.data.image_size = size
  config.train.batch_size = batch_size
  config.train.cpu_options = cpu_options
  return config


def build_step(config, mode: str, mesh):
  """(start, jitted step, its arguments, the step's compiler.Choice) of the train or eval
  step that train.py runs, from the state train.py starts from (train_state.Start),
  compiled as train.py compiles it (on CPU, autotuned by default)."""
  num_classes, num_examples = DATASETS[config.model.stem]
  batch_size, size = config.train.batch_size, config.data.image_size
  start = train_state.initialize(
    config,
    mesh,
    num_classes=num_classes,
    in_channels=3,
    steps_per_epoch=max(num_examples // batch_size, 1),
  )
  rng = np.random.default_rng(0)
  batch = {
    'image': rng.standard_normal((batch_size, size, size, 3), dtype=np.float32),
    'label': rng.integers(0, num_classes, batch_size).astype(np.int32),
  }
  if mode == 'eval':
    batch['mask'] = np.ones(batch_size, bool)
  batch = parallel.shard_batch(batch, mesh)
  if mode == 'train':
    tuned = train_state.train_step(config, start, mesh)
    args = (start.state, batch)
  else:
    tuned = train_state.eval_step(config, start, mesh)
    args = (start.state.params, start.state.batch_stats, batch)
  return start, tuned.jitted(*args), args, tuned.choice


def matmul_flops(step, args) -> int:
  """FLOPs of the step's convolutions and matrix products (2 per multiply-add, read off
  its jaxpr, backward pass and scanned units included): the work a matrix-multiply
  peak bounds, counted the same on every platform (XLA:GPU's cost analysis leaves out
  the convolutions it hands to cuDNN)."""
  return 2 * summary.jaxpr_macs(step.trace(*args).jaxpr.jaxpr)


def ours(
  name: str,
  mode: str,
  batch_size: int,
  steps: int,
  model_fields: dict,
  cpu_options: str,
  overrides=(),
) -> dict:
  """Our step's numbers, with `model_fields` (dtype, conv1x1, scan, remat) set in config.model
  and the config `overrides` applied."""
  config = benchmark_config(name, batch_size, model_fields, cpu_options, overrides)
  mesh = parallel.create_mesh()
  _, step, args, choice = build_step(config, mode, mesh)
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()

  if mode == 'train':
    state, batch = args

    def run_step():
      nonlocal state
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
  else:

    def run_step():
      jax.block_until_ready(compiled(*args))

  seconds = median_step_seconds(run_step, steps)
  flops = matmul_flops(step, args)
  peak_bytes = None
  if memory is not None:
    peak_bytes = memory.temp_size_in_bytes + memory.argument_size_in_bytes
  return {
    'cpu_choice': None if jax.default_backend() != 'cpu' else str(choice),
    'scan': config.model.scan,
    'remat': config.model.remat,
    'images_per_s': batch_size / seconds,
    'compile_s': compile_s,
    'gflop_per_image': flops / batch_size / 1e9,
    'xla_peak_mb': None if peak_bytes is None else peak_bytes / 2**20,
  }


def theirs(name: str, mode: str, batch_size: int, steps: int, dtype: str) -> dict | None:
  """PyTorch's numbers, from a separate process: torch and TensorFlow/JAX in one
  process crash here (segmentation fault in the first torch step)."""
  _, arg, size, _ = MODELS[name]
  command = [
    sys.executable, '-m', 'benchmarks.torch_step', f'--arch={name}', f'--depth={arg}',
    f'--size={size}', f'--mode={mode}', f'--batch={batch_size}', f'--steps={steps}',
    f'--dtype={dtype}',
  ]  # fmt: skip
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    print(f'  torch: no result ({result.stderr.strip().splitlines()[-1:]})')
    return None
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', choices=sorted(MODELS), default='resnet50')
  parser.add_argument('--mode', choices=('train', 'eval'), default='train')
  parser.add_argument('--batch', type=int, default=0, help='default: 32 ImageNet, 128 CIFAR')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--conv1x1', choices=('auto', 'einsum', 'conv'), default='auto')
  for field, what in (('scan', 'units under lax.scan'), ('remat', 'recompute activations')):
    parser.add_argument(
      f'--{field}',
      action=argparse.BooleanOptionalAction,
      help=f"model.{field}: {what} (default: the config's)",
    )
  parser.add_argument(
    '--cpu-options',
    default='autotune',
    help='train.cpu_options: autotune (the cached choice, or timed now), xla, ynn-off, ynn:dot,...',
  )
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='KEY=VALUE',
    help='a config override, e.g. data.mixup_alpha=0.2 (repeat); torch runs without it',
  )
  parser.add_argument('--no-torch', action='store_true')
  args = parser.parse_args()
  batch = args.batch or MODELS[args.model][3]

  # PyTorch first: on a GPU, JAX keeps the memory it takes until this process ends.
  torch_result = None
  if not args.no_torch:
    torch_result = theirs(args.model, args.mode, batch, args.steps, args.dtype)
  peak = gemm_peak_gflops(args.dtype)
  model_fields = {'dtype': args.dtype, 'conv1x1': args.conv1x1}
  model_fields.update(
    {f: getattr(args, f) for f in ('scan', 'remat') if getattr(args, f) is not None}
  )
  overrides = [tuple(kv.split('=', 1)) for kv in args.set]
  mine = ours(args.model, args.mode, batch, args.steps, model_fields, args.cpu_options, overrides)
  torch_ips = torch_result['images_per_s'] if torch_result else None
  gflops_achieved = mine['gflop_per_image'] * mine['images_per_s']
  result = {
    'model': args.model,
    'mode': args.mode,
    'batch': batch,
    **model_fields,
    'overrides': dict(overrides),
    'devices': jax.device_count(),
    'platform': jax.devices()[0].platform,
    'load_average': os.getloadavg()[0],
    **mine,
    'gflop_per_s': gflops_achieved,
    'gemm_peak_gflop_per_s': peak,
    'fraction_of_peak': gflops_achieved / peak,
    'torch_images_per_s': torch_ips,
    'torch_device': torch_result['device'] if torch_result else None,
    'ratio': mine['images_per_s'] / torch_ips if torch_ips else None,
  }
  print(
    f'{args.model} {args.mode}, batch {batch}, {args.dtype}, {result["platform"]} '
    f'x{result["devices"]}, load {result["load_average"]:.1f}'
  )
  if mine['cpu_choice']:
    print(f'  XLA:CPU choice: {mine["cpu_choice"]} (--cpu-options={args.cpu_options})')
  print(
    f'  ours   {mine["images_per_s"]:9.1f} img/s   compile {mine["compile_s"]:.1f} s   '
    f'{mine["gflop_per_image"]:.2f} GFLOP/img   {gflops_achieved:.0f} GFLOP/s '
    f'({100 * result["fraction_of_peak"]:.0f}% of {peak:.0f} GEMM peak)'
  )
  if torch_ips:
    print(
      f'  torch  {torch_ips:9.1f} img/s   ({torch_result["torch_version"]} on '
      f'{torch_result["device"]}, channels_last, '
      f'peak RSS {torch_result["peak_rss_mb"]:.0f} MB)'
    )
    print(f'  ratio  {result["ratio"]:9.2f}x')
  print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}))


if __name__ == '__main__':
  main()
