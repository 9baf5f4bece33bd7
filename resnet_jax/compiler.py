"""XLA compiler options for the train and eval steps, chosen per platform and compute dtype.

On CPU the steps compile with XLA's YNNPACK library fusions: for dots (which
take the convolutions too) and reductions, and in float32 also for elementwise
chains. Measured on a 2-core AVX-512 CPU (benchmarks/train_step.py), train
step images/s without -> with:

  float32   ResNet-50 3.4 -> 3.9-4.0, ResNet-20 207 -> 282, ResNet-56 (scan) 82 -> 94
  bfloat16  ResNet-50 4.6 -> 5.1-5.3 (with elementwise chains too: 3.5-3.9)

Outputs and gradients stay equal to the default compilation to float
tolerance (tests/test_compiler.py). GPUs and TPUs get no options.

A user's own `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=...` wins: the
steps then compile with what it says (empty turns the fusions off).
"""

import os

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def _ynn_fusions(*kinds: str) -> dict[str, str]:
  return {YNN_FUSION_FLAG: ','.join(f'LIBRARY_FUSION_TYPE_{kind}' for kind in kinds)}


CPU_OPTIONS = {
  'float32': _ynn_fusions('DOT', 'ELTWISE', 'REDUCE'),
  'bfloat16': _ynn_fusions('DOT', 'REDUCE'),
}


def step_options(mesh: jax.sharding.Mesh, dtype: str = 'float32') -> dict[str, str]:
  """The compiler options for a step that runs on `mesh` and computes in `dtype`."""
  if mesh.devices.flat[0].platform != 'cpu':
    return {}
  if YNN_FUSION_FLAG in os.environ.get('XLA_FLAGS', ''):
    return {}
  return dict(CPU_OPTIONS[dtype])
