"""The CPU compiler options: the steps compute the same numbers with them, and they take effect."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax import compiler
from resnet_jax.errors import ConfigError
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


CHOICES = [*compiler.candidates('auto'), compiler.Choice('ynn:dot', 'conv')]


@pytest.mark.parametrize(
  'network, train',
  [
    ('cifar-resnet20-scan', False),
    pytest.param('cifar-resnet20-scan', True, marks=pytest.mark.slow),
    pytest.param('imagenet-resnet50-narrow', False, marks=pytest.mark.slow),
    pytest.param('imagenet-resnet50-narrow', True, marks=pytest.mark.slow),
  ],
)
def test_every_choice_computes_what_the_default_compilation_does(model_config, network, train):
  """Each choice the autotuner can make (the fusion sets, with either 1x1 formulation) gives
  XLA's default compilation's outputs and gradients, so the choice changes only the speed.
  (That the formulations compute the same layer is tests/test_conv.py's.)"""
  model_config.update(NETWORKS[network], bn_group_size=0)
  default = {}  # 1x1 formulation -> ((values, gradients), HLO) of XLA's default compilation
  for choice in CHOICES:
    model_config.conv1x1 = choice.conv1x1
    if choice.conv1x1 not in default:
      default[choice.conv1x1] = _compiled_outputs(model_config, None, train)
    (want_values, want_grads), default_hlo = default[choice.conv1x1]
    options = choice.compiler_options()
    (got_values, got_grads), optimized_hlo = _compiled_outputs(model_config, options, train)
    if options:
      # The options take effect: an ignored or renamed flag compiles the default program.
      assert optimized_hlo != default_hlo, choice
    # In training mode BatchNorm on 8 examples, 50 layers deep, amplifies rounding: sums
    # in another order move a narrow ResNet-50's logits by up to 2e-4 of the largest.
    _assert_close(got_values, want_values, rtol=1e-3 if train else 1e-4)
    if not train:
      # Training-mode gradients of the last stages are dominated by rounding in any
      # compilation (batch norm's backward subtracts nearly equal terms there: scaling
      # the input by 1 + 1e-6 moves them by 4%), so gradients are compared in eval mode.
      _assert_close(got_grads, want_grads, rtol=1e-4)


@pytest.mark.parametrize(
  'name, flag',
  [
    ('xla', None),
    ('ynn-off', ''),
    ('ynn:dot', 'LIBRARY_FUSION_TYPE_DOT'),
    ('ynn:reduce,dot', 'LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_DOT'),
  ],
)
def test_fusion_names_become_xlas_options(name, flag):
  options = compiler.fusion_options(name)
  assert options == ({} if flag is None else {compiler.YNN_FUSION_FLAG: flag})
  compiler.check_config(name)


@pytest.mark.parametrize('name', ['ynn:dots', 'dot', 'ynn:dot,dot', 'ynn', 'YNN:DOT', ''])
def test_a_fusion_name_that_is_not_one_is_a_config_error(name):
  with pytest.raises(ConfigError, match=r'train.cpu_options=.*ynn:dot,reduce'):
    compiler.check_config(name)


def test_fixed_choice_on_gpu_and_where_xla_flags_name_the_fusions(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert compiler.fixed_choice('ynn:dot', 'auto', 'cpu') == compiler.Choice('ynn:dot', 'auto')
  assert compiler.fixed_choice('ynn:dot', 'auto', 'gpu') == compiler.Choice('xla', 'auto')
  assert compiler.fixed_choice('autotune', 'auto', 'cpu') is None  # to be measured
  assert compiler.fixed_choice('autotune', 'auto', 'tpu') == compiler.Choice('xla', 'auto')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  assert compiler.fixed_choice('ynn:dot', 'conv', 'cpu') == compiler.Choice('xla', 'conv')


def test_candidates_keep_a_1x1_formulation_the_config_names():
  assert {c.conv1x1 for c in compiler.candidates('conv')} == {'conv'}
  assert {c.conv1x1 for c in compiler.candidates('auto')} == {'einsum'}
  assert [c.fusions for c in compiler.candidates('auto')] == list(compiler.FUSION_CANDIDATES)
