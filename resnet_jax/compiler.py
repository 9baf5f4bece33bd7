"""XLA compiler options for the train and eval steps, chosen per platform.

On CPU the steps compile with XLA's YNNPACK library fusions for dots (which
take the convolutions too), elementwise chains and reductions. Measured on a
2-core AVX-512 CPU (benchmarks/train_step.py, float32): ResNet-50 train step
3.4 -> 4.0 img/s, ResNet-20 207 -> 291, ResNet-56 (scan) 82 -> 94; outputs and
gradients stay equal to the default compilation to float tolerance
(tests/test_compiler.py). GPUs and TPUs get no options.

A user's own `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=...` wins: the
steps then compile with what it says (empty turns the fusions off).
"""

import os

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
CPU_OPTIONS = {
  YNN_FUSION_FLAG: ','.join(
    f'LIBRARY_FUSION_TYPE_{kind}' for kind in ('DOT', 'ELTWISE', 'REDUCE')
  ),
}


def step_options(mesh: jax.sharding.Mesh) -> dict[str, str]:
  """The compiler options for a step that runs on `mesh`."""
  if mesh.devices.flat[0].platform != 'cpu':
    return {}
  if YNN_FUSION_FLAG in os.environ.get('XLA_FLAGS', ''):
    return {}
  return dict(CPU_OPTIONS)
