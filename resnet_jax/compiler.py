"""XLA compiler options for the train and eval steps, chosen per platform, step and dtype.

On CPU the train step compiles with XLA's YNNPACK library fusions: for dots
(which take the convolutions too) and reductions, and in float32 also for
elementwise chains. Measured on a 2-core AVX-512 CPU (benchmarks/train_step.py),
train step images/s with XLA's default -> with these:

  float32   ResNet-50 3.4 -> 3.8-4.0, ResNet-20 207 -> 273-282, ResNet-56 (scan) 82 -> 92-94
  bfloat16  ResNet-50 4.6 -> 5.1-5.3 (with elementwise chains too: 3.5-3.9)

The eval step runs fastest with YNNPACK off altogether (XLA's default hands it
some reductions): ResNet-50 eval 18.2 -> 21 img/s, against 15 with the train
step's fusions. Outputs and gradients stay equal to the default compilation to
float tolerance (tests/test_compiler.py). GPUs and TPUs get no options.

A user's own `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=...` wins: the
steps then compile with what it says.
"""

import os

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# (step, compute dtype) -> the YNNPACK fusion kinds on CPU; any other: none.
YNN_FUSIONS = {
  ('train', 'float32'): ('DOT', 'ELTWISE', 'REDUCE'),
  ('train', 'bfloat16'): ('DOT', 'REDUCE'),
}


def step_options(mesh: jax.sharding.Mesh, step: str, dtype: str = 'float32') -> dict[str, str]:
  """The compiler options for a `step` ('train' or 'eval') on `mesh` that computes in `dtype`."""
  if mesh.devices.flat[0].platform != 'cpu':
    return {}
  if YNN_FUSION_FLAG in os.environ.get('XLA_FLAGS', ''):
    return {}
  kinds = YNN_FUSIONS.get((step, dtype), ())
  return {YNN_FUSION_FLAG: ','.join(f'LIBRARY_FUSION_TYPE_{kind}' for kind in kinds)}
