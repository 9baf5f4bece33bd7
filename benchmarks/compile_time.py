"""Compile time and memory of the train step against depth: unrolled vs scanned, with remat.

  python -m benchmarks.compile_time    # ResNet-110, -152, -1202: the table in docs/benchmarks.md
  python -m benchmarks.compile_time --models=resnet56 --timeout=300

For each network and execution (model.scan, model.remat) it reports the
seconds to trace and lower the train step that train.py runs, the seconds
XLA takes to compile it, and XLA's temporary buffer size of the compiled
step (activations kept for the backward pass, mostly). Each measurement runs
in a process of its own, so a compile cut off at --timeout is reported as
such and the others still run. Prints a table, then one JSON line.
"""

import argparse
import json
import subprocess
import sys
import time

from benchmarks.train_step import MODELS, benchmark_config, build_step
from resnet_jax import parallel

EXECUTIONS = {
  'unrolled': dict(scan=False, remat=False),
  'scan': dict(scan=True, remat=False),
  'unrolled+remat': dict(scan=False, remat=True),
  'scan+remat': dict(scan=True, remat=True),
}


def measure(name: str, execution: str, batch_size: int) -> dict:
  """Trace+lower and compile seconds and XLA's temporary memory of one train step."""
  # A fixed choice: autotuning would compile every candidate inside the measurement.
  config = benchmark_config(name, batch_size, EXECUTIONS[execution], cpu_options='ynn:dot')
  start = time.perf_counter()
  _, step, args, _ = build_step(config, 'train', parallel.create_mesh())
  lowered = step.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  memory = compiled.memory_analysis()
  return {
    'trace_lower_s': lowered_at - start,  # includes building the parameters
    'compile_s': compiled_at - lowered_at,
    'temp_mb': None if memory is None else memory.temp_size_in_bytes / 2**20,
  }


def measure_in_subprocess(name: str, execution: str, batch_size: int, timeout: float) -> dict:
  command = [
    sys.executable, '-m', 'benchmarks.compile_time', f'--one={name},{execution}',
    f'--batch={batch_size}',
  ]  # fmt: skip
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'timed_out_after_s': timeout}
  if result.returncode != 0:
    return {'error': (result.stderr.strip().splitlines() or ['?'])[-1]}
  return json.loads(result.stdout.strip().splitlines()[-1])


def _cell(result: dict) -> str:
  if 'timed_out_after_s' in result:
    return f'> {result["timed_out_after_s"]:.0f} s (cut off)'
  if 'error' in result:
    return f'error: {result["error"][:60]}'
  return (
    f'{result["trace_lower_s"]:.1f} s + {result["compile_s"]:.1f} s, '
    f'{result["temp_mb"]:,.0f} MB temp'
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='resnet110,resnet152,resnet1202')
  parser.add_argument('--executions', default=','.join(EXECUTIONS))
  parser.add_argument('--batch', type=int, default=0, help='default: 32 ImageNet, 128 CIFAR')
  parser.add_argument('--timeout', type=float, default=300.0, help='seconds per measurement')
  parser.add_argument('--one', help=argparse.SUPPRESS)  # name,execution: measure in this process
  args = parser.parse_args()
  if args.one:
    name, execution = args.one.split(',')
    print(json.dumps(measure(name, execution, args.batch or MODELS[name][3])))
    return

  results = []
  print('model, batch: trace+lower + compile, XLA temporary memory')
  for name in args.models.split(','):
    batch = args.batch or MODELS[name][3]
    for execution in args.executions.split(','):
      result = measure_in_subprocess(name, execution, batch, args.timeout)
      results.append({'model': name, 'batch': batch, 'execution': execution, **result})
      print(f'  {name:>10} {execution:>15}, batch {batch}: {_cell(result)}', flush=True)
  print(json.dumps(results))


if __name__ == '__main__':
  main()
