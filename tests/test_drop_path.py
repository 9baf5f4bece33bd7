"""Stochastic depth (model.drop_path_rate): which units drop their branch and how often,
the scaling of kept branches, evaluation mode, and rate 0 as the network without it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax.models import ResidualUnit, create_model, network_spec
from resnet_jax.models.blocks import UnitOptions

RATE = 0.5


def _model(model_config, **fields):
  # 9 units; the default width, whose initializers other tests have compiled
  model_config.update(dict(depth=20, bn_group_size=0), **fields)
  return create_model(model_config, num_classes=10, rngs=nnx.Rngs(0))


def _x(batch=4, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, 8, 8, 3))


def test_the_rates_rise_linearly_over_the_units_of_all_stages(model_config):
  model_config.update(depth=20, drop_path_rate=RATE)
  rates = network_spec(model_config, platform='cpu').drop_rates
  assert np.allclose(sum(rates, ()), RATE * np.arange(9) / 8)
  assert [len(stage) for stage in rates] == [3, 3, 3]
  model_config.drop_path_rate = 0.0
  assert network_spec(model_config, platform='cpu').drop_rates is None


def test_each_unit_drops_examples_at_its_rate(model_config, monkeypatch):
  """Unit i of 9 drops an example's branch with probability 0.5 i / 8 (timm's rule),
  measured over 4,096 examples (8 keys x 512). 4 binomial standard deviations is at most
  0.031; the rule 0.5 i / 9 (over N instead of N - 1) would be 0.056 off at the last unit,
  a rule counting units within a stage 0.33 off."""
  dropped_per_call = []
  drop_path = ResidualUnit._drop_path

  def recording(self, branch_nhwc, key, drop_rate):
    y = drop_path(self, branch_nhwc, key, drop_rate)
    dropped_per_call.append(jnp.all(y == 0, axis=(1, 2, 3)))
    return y

  monkeypatch.setattr(ResidualUnit, '_drop_path', recording)
  graphdef, state = nnx.split(_model(model_config, drop_path_rate=RATE))

  @jax.jit
  def dropped_un(state, key):
    dropped_per_call.clear()
    nnx.merge(graphdef, state)(x_nhwc, key=key)
    return jnp.stack(dropped_per_call)

  x_nhwc = _x(batch=512)
  dropped_kn = np.concatenate([dropped_un(state, jax.random.key(k)) for k in range(8)], axis=1)
  fraction_u = dropped_kn.mean(axis=1)
  expected_u = RATE * np.arange(9) / 8
  tolerance_u = 4 * np.sqrt(expected_u * (1 - expected_u) / dropped_kn.shape[1])
  assert fraction_u[0] == 0
  np.testing.assert_array_less(np.abs(fraction_u - expected_u), tolerance_u + 1e-9)


def test_kept_branches_are_scaled_so_the_expected_output_is_the_unit(model_config):
  """A pre-activation unit with an identity shortcut: y = x + s F, s = 0 (dropped) or
  1 / (1 - p) (kept) for each example, and the mean of s over many draws is 1."""
  options = UnitOptions(
    block='basic', variant='preact', shortcut='A', zero_init_residual=False,
    bn_group_size=0, dtype=jnp.float32,
  )  # fmt: skip
  graphdef, state = nnx.split(ResidualUnit(16, 16, 1, options, rngs=nnx.Rngs(0)))
  x_nhwc = jax.random.normal(jax.random.key(1), (16, 4, 4, 16))
  p = 0.25
  branch_nhwc = nnx.merge(graphdef, state)(x_nhwc) - x_nhwc  # drop_rate None: no dropping

  @functools.partial(jax.vmap, in_axes=(None, 0))
  def scale_n(state, key):
    y_nhwc = nnx.merge(graphdef, state)(x_nhwc, key, p)
    return jnp.sum((y_nhwc - x_nhwc) * branch_nhwc, axis=(1, 2, 3)) / jnp.sum(
      branch_nhwc**2, axis=(1, 2, 3)
    )

  scales_kn = np.asarray(scale_n(state, jax.random.split(jax.random.key(2), 400)))
  kept = scales_kn > 0.5
  np.testing.assert_allclose(scales_kn[kept], 1 / (1 - p), rtol=1e-5)
  np.testing.assert_allclose(scales_kn[~kept], 0, atol=1e-6)
  # s has standard deviation sqrt(p / (1 - p)) = 0.58: 4 of them over 6,400 draws is 0.029.
  assert abs(scales_kn.mean() - 1) < 0.03


def test_evaluation_is_deterministic_and_the_network_without_it(model_config):
  model = _model(model_config.copy_and_resolve_references(), drop_path_rate=RATE)
  without = _model(model_config, drop_path_rate=0.0)
  # Same parameters and BN statistics: checkpoints and pretrained weights load either way.
  state, state_without = nnx.to_pure_dict(nnx.state(model)), nnx.to_pure_dict(nnx.state(without))
  jax.tree.map(np.testing.assert_array_equal, state, state_without)
  x_nhwc = _x()
  model.eval()
  without.eval()
  logits = model(x_nhwc)
  np.testing.assert_array_equal(logits, model(x_nhwc, key=jax.random.key(3)))
  np.testing.assert_array_equal(logits, without(x_nhwc))
  model.train()
  train_logits = [model(x_nhwc, key=jax.random.key(k)) for k in range(2)]
  assert not np.allclose(train_logits[0], train_logits[1])


def test_training_without_a_key_is_a_clear_error(model_config):
  model = _model(model_config, drop_path_rate=RATE)
  with pytest.raises(ValueError, match=r'drop_path_rate.*key=\.\.\..*model\.eval\(\)'):
    model(_x())


@pytest.mark.parametrize('gate', ['off', 'dropout'])
def test_rate_zero_samples_nothing_new(model_config, gate):
  """At rate 0 the step's key stays out of the network (gate off) or draws only the
  dropout shortcut's masks, one per unit; each dropping unit draws one mask more."""

  def draws(rate):
    config = model_config.copy_and_resolve_references()
    graphdef, state = nnx.split(_model(config, gate=gate, drop_path_rate=rate))
    forward = lambda state, x, key: nnx.merge(graphdef, state)(x, key=key)
    return _count_random_bits(jax.make_jaxpr(forward)(state, _x(), jax.random.key(0)).jaxpr)

  gate_draws = 9 if gate == 'dropout' else 0
  assert draws(0.0) == gate_draws
  assert draws(RATE) == gate_draws + 8  # the first unit never drops


def _count_random_bits(jaxpr) -> int:
  """Random draws in a jaxpr, its nested calls included."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == 'random_bits'
    for param in eqn.params.values():
      for sub in param if isinstance(param, tuple | list) else (param,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          count += _count_random_bits(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          count += _count_random_bits(sub)
  return count
