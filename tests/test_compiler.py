"""The CPU compiler options: the steps compute the same numbers with them, and they take effect."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax import compiler, parallel
from resnet_jax.models import create_model

NETWORKS = {
  'cifar-resnet20-scan': dict(depth=20, scan=True),
  'imagenet-resnet50-narrow': dict(depth=50, stem='imagenet', shortcut='B', width=8),
}


def _compiled_outputs(model_config, compiler_options, train: bool):
  """((loss, (logits, BN statistics)), gradients) of one pass, and the compiled HLO text."""
  model = create_model(model_config, num_classes=10, rngs=nnx.Rngs(0))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  x_nhwc = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))

  def loss(params):
    model = nnx.merge(graphdef, params, batch_stats)
    model.train() if train else model.eval()
    logits = model(x_nhwc)
    new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    return jnp.mean(jnp.sin(logits)), (logits, new_stats)

  step = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=compiler_options)
  return step(params), step.lower(params).compile().as_text()


def _assert_close(got, want, rtol):
  for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    atol = rtol * np.max(np.abs(want_leaf))
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
  'network, options_of',
  [
    ('cifar-resnet20-scan', 'float32'),
    pytest.param('cifar-resnet20-scan', 'bfloat16', marks=pytest.mark.slow),  # checked in float32
    pytest.param('imagenet-resnet50-narrow', 'float32', marks=pytest.mark.slow),
  ],
)
def test_cpu_options_compute_what_the_default_compilation_does(model_config, network, options_of):
  model_config.update(NETWORKS[network])
  model_config.bn_group_size = 0
  for train in (True, False):
    (want_values, want_grads), default_hlo = _compiled_outputs(model_config, None, train)
    options = compiler.step_options(parallel.create_mesh(), 'train', options_of)
    (got_values, got_grads), optimized_hlo = _compiled_outputs(model_config, options, train)
    # The options take effect: an ignored or renamed flag compiles the default program.
    assert optimized_hlo != default_hlo
    _assert_close(got_values, want_values, rtol=1e-4)
    if not train:
      # Training-mode gradients of the last stages are dominated by rounding in any
      # compilation (batch norm's backward subtracts nearly equal terms there: scaling
      # the input by 1 + 1e-6 moves them by 4%), so gradients are compared in eval mode.
      _assert_close(got_grads, want_grads, rtol=1e-4)


def test_step_options_by_step_and_dtype_unless_xla_flags_name_them(monkeypatch):
  mesh = parallel.create_mesh()
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  fusions = lambda *args: compiler.step_options(mesh, *args)[compiler.YNN_FUSION_FLAG]
  assert fusions('train') == ','.join(
    f'LIBRARY_FUSION_TYPE_{kind}' for kind in ('DOT', 'ELTWISE', 'REDUCE')
  )
  assert 'ELTWISE' not in fusions('train', 'bfloat16') and 'DOT' in fusions('train', 'bfloat16')
  assert fusions('eval') == ''  # YNNPACK off: XLA's default hands it some reductions
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  assert compiler.step_options(mesh, 'train') == {}
