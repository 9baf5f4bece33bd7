"""The learning-rate schedules and optimizers that config.optim describes."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from resnet_jax import defaults, optim
from resnet_jax.errors import ConfigError
from resnet_jax.models import layout


def _optim(**overrides):
  config = defaults.get_config().optim
  config.unlock()
  config.update(overrides)
  return config


def _schedule(config, batch_size=128, steps_per_epoch=100, total_steps=1000):
  return optim.create_learning_rate_schedule(
    config, batch_size=batch_size, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )


def test_paper_cifar_piecewise_schedule_with_linear_scaling():
  # He et al. 2015: 0.1 at batch 128, divided by 10 at 32k and 48k iterations.
  lr = _schedule(_optim(learning_rate=0.2, boundaries=(32_000, 48_000)), total_steps=64_000)
  assert [float(lr(s)) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)] == pytest.approx(
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
  )


def test_boundaries_in_epochs():
  lr = _schedule(
    _optim(learning_rate=0.1, boundaries=(30, 60), boundaries_unit='epochs'),
    batch_size=256,
    steps_per_epoch=50,
  )
  assert [float(lr(s)) for s in (1499, 1500, 2999, 3000)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_resnet110_constant_warmup_then_piecewise_from_step_zero():
  config = _optim(
    learning_rate=0.2,
    warmup_steps=400,
    warmup='constant',
    warmup_factor=0.1,
    boundaries=(32_000, 48_000),
  )
  lr = _schedule(config)
  assert [float(lr(s)) for s in (0, 399, 400, 32_000)] == pytest.approx([0.01, 0.01, 0.1, 0.01])


def test_linear_warmup_then_cosine_to_zero():
  config = _optim(learning_rate=0.1, schedule='cosine', warmup_epochs=2.0)
  lr = _schedule(config, batch_size=512, steps_per_epoch=10, total_steps=120)
  peak = 0.2
  assert float(lr(0)) == pytest.approx(0.0)
  assert float(lr(10)) == pytest.approx(peak / 2)
  assert float(lr(20)) == pytest.approx(peak)
  assert float(lr(70)) == pytest.approx(peak / 2, rel=1e-5)
  assert float(lr(120)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
  'field,value',
  [
    ('schedule', 'step'),
    ('optimizer', 'adam'),
    ('warmup', 'exp'),
    ('boundaries_unit', 'iters'),
    ('boundaries', (48_000, 32_000)),
    ('backbone_lr_scale', -0.1),
    ('momentum', 1.0),
    ('label_smoothing', -0.1),
    ('weight_decay', -1e-4),
    ('adam_betas', (0.9, 1.0)),
    ('adam_betas', (0.9,)),
    ('adam_eps', 0.0),
  ],
)
def test_check_config_names_the_bad_field(field, value):
  with pytest.raises(ConfigError, match=f'optim.{field}='):
    optim.check_config(_optim(**{field: value}))
  optim.check_config(_optim())  # the defaults pass


def _params():
  return {'conv': {'kernel': jnp.ones((3, 3, 2, 2))}, 'bn': {'scale': jnp.ones((2,))}}


def _one_update(config, grads=None, lr=0.1):
  config.learning_rate = lr * 256 / 128
  tx, _ = optim.create_optimizer(config, batch_size=128, steps_per_epoch=10, total_steps=100)
  params = _params()
  grads = grads or jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_weight_decay_masked_off_bn_and_bias():
  updates = _one_update(_optim(weight_decay=1e-4, decay_bn_and_bias=False, momentum=0.0))
  np.testing.assert_allclose(updates['conv']['kernel'], -0.1 * 1e-4, rtol=1e-6)
  np.testing.assert_allclose(updates['bn']['scale'], 0.0)
  updates = _one_update(_optim(weight_decay=1e-4, decay_bn_and_bias=True, momentum=0.0))
  np.testing.assert_allclose(updates['bn']['scale'], -0.1 * 1e-4, rtol=1e-6)


def test_sgd_nesterov_momentum_matches_optax():
  grads = {'conv': {'kernel': jnp.full((3, 3, 2, 2), 0.5)}, 'bn': {'scale': jnp.full((2,), -1.0)}}
  config = _optim(weight_decay=0.0, nesterov=True, momentum=0.9)
  config.learning_rate = 0.2
  tx, _ = optim.create_optimizer(config, batch_size=128, steps_per_epoch=10, total_steps=100)
  ref = optax.sgd(0.1, momentum=0.9, nesterov=True)
  params = _params()
  state, ref_state = tx.init(params), ref.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    ref_updates, ref_state = ref.update(grads, ref_state, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, ref_updates)


def _three_updates(config, reference, grads):
  """Our optimizer's and `reference`'s third updates from the same parameters."""
  config.learning_rate = 0.2
  tx, _ = optim.create_optimizer(config, batch_size=128, steps_per_epoch=10, total_steps=100)
  params = _params()
  state, ref_state = tx.init(params), reference.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    ref_updates, ref_state = reference.update(grads, ref_state, params)
  return updates, ref_updates


GRADS = {
  'conv': {'kernel': jnp.linspace(-1, 2, 36).reshape(3, 3, 2, 2)},
  'bn': {'scale': jnp.array([0.5, -2.0])},
}


def test_adamw_is_optaxs_with_decay_off_bn_and_bias():
  config = _optim(optimizer='adamw', weight_decay=0.05, decay_bn_and_bias=False)
  config.adam_betas, config.adam_eps = (0.8, 0.99), 1e-6
  only_kernels = lambda params: {'conv': {'kernel': True}, 'bn': {'scale': False}}
  reference = optax.adamw(0.1, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.05, mask=only_kernels)
  updates, ref_updates = _three_updates(config, reference, GRADS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, ref_updates)


def test_lamb_is_optaxs_where_everything_decays():
  config = _optim(optimizer='lamb', weight_decay=0.02, decay_bn_and_bias=True)
  reference = optax.lamb(0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.02)
  updates, ref_updates = _three_updates(config, reference, GRADS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, ref_updates)


def test_lamb_leaves_bn_and_bias_to_adam_alone_where_they_do_not_decay():
  config = _optim(optimizer='lamb', weight_decay=0.02, decay_bn_and_bias=False)
  config.learning_rate = 0.2
  tx, _ = optim.create_optimizer(config, batch_size=128, steps_per_epoch=10, total_steps=100)
  params = {**_params(), 'bn': {'scale': jnp.full((2,), 3.0)}}  # a trust ratio of 3 if applied
  updates, _ = tx.update(GRADS, tx.init(params), params)
  # Adam's first step is g / (|g| + eps): lr * sign(g) with no trust ratio or decay (to the
  # float32 rounding of its bias correction 1 - 0.999) ...
  np.testing.assert_allclose(updates['bn']['scale'], [-0.1, 0.1], rtol=2e-5)
  # ... while a kernel's step is its trust ratio |w| / |update| times that direction.
  kernel = updates['conv']['kernel']
  direction = np.sign(GRADS['conv']['kernel']) + 0.02 * 1.0  # Adam's step + decay, w = 1
  trust = np.linalg.norm(np.ones(36)) / np.linalg.norm(direction)
  np.testing.assert_allclose(kernel, -0.1 * trust * direction, rtol=2e-5)


def test_gradient_clipping_bounds_the_update():
  grads = {'conv': {'kernel': jnp.full((3, 3, 2, 2), 100.0)}, 'bn': {'scale': jnp.zeros((2,))}}
  updates = _one_update(_optim(weight_decay=0.0, momentum=0.0, grad_clip_norm=1.0), grads)
  assert float(optax.tree.norm(updates)) == pytest.approx(0.1, rel=1e-5)


def test_lars_scales_kernels_by_trust_ratio_only():
  grads = {'conv': {'kernel': jnp.full((3, 3, 2, 2), 2.0)}, 'bn': {'scale': jnp.full((2,), 2.0)}}
  updates = _one_update(
    _optim(optimizer='lars', weight_decay=0.0, momentum=0.0, lars_trust_coefficient=0.001), grads
  )
  # Kernel: trust ratio 0.001 * |w| / |g| = 0.0005, so the step is lr * 0.0005 * g.
  np.testing.assert_allclose(updates['conv']['kernel'], -0.1 * 0.0005 * 2.0, rtol=1e-5)
  np.testing.assert_allclose(updates['bn']['scale'], -0.1 * 2.0, rtol=1e-5)


def _stage_params(per_unit: bool):
  """A stage of three units, one entry per unit or units 1-2 stacked as a scanned stage."""
  units = {
    i: {
      'convs': {0: {'kernel': jnp.full((1, 1, 2, 2), i + 1.0)}},
      'norms': {0: {'scale': jnp.ones((2,))}},
    }
    for i in range(3)
  }
  tree = {'stages': {0: {'units': units}}}
  return tree if per_unit else layout.to_stacked(tree, ml_collections.ConfigDict({'scan': True}))


@pytest.mark.parametrize('optimizer', optim.OPTIMIZERS)
def test_scanned_stages_are_updated_as_the_unrolled_units(optimizer):
  """Stacked BN scales stay undecayed, and LARS and LAMB take one trust ratio per unit."""
  config = _optim(optimizer=optimizer, weight_decay=1e-2, momentum=0.9, decay_bn_and_bias=False)
  tx, _ = optim.create_optimizer(config, batch_size=128, steps_per_epoch=10, total_steps=100)
  updates = []
  for per_unit in (True, False):
    params = _stage_params(per_unit)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    updates.append(layout.to_per_unit(tx.update(grads, tx.init(params), params)[0]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), *updates)
  units = updates[1]['stages'][0]['units']
  assert not np.allclose(units[1]['convs'][0]['kernel'], units[2]['convs'][0]['kernel'])
  np.testing.assert_allclose(units[2]['norms'][0]['scale'], units[0]['norms'][0]['scale'])


@pytest.mark.parametrize('scale', [0.0, 0.25])
def test_backbone_rate_scales_everything_but_the_head(scale):
  params = {'head': {'kernel': jnp.ones((2, 3))}, **_params()}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  config = _optim(weight_decay=1e-4, momentum=0.9)
  steps = []
  for backbone_lr_scale in (1.0, scale):
    config.backbone_lr_scale = backbone_lr_scale
    tx, _ = optim.create_optimizer(config, batch_size=128, steps_per_epoch=10, total_steps=100)
    state = tx.init(params)
    for _ in range(2):  # The second step carries momentum.
      updates, state = tx.update(grads, state, params)
    steps.append(updates)
  full, scaled = steps
  np.testing.assert_array_equal(scaled['head']['kernel'], full['head']['kernel'])
  for name in ('conv', 'bn'):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, scale * b, rtol=1e-6), scaled[name], full[name]
    )
  if scale == 0:  # Frozen: no update at all.
    assert not any(jnp.any(u) for u in jax.tree.leaves({k: scaled[k] for k in ('conv', 'bn')}))


def test_total_steps():
  train = defaults.get_config().train
  assert optim.total_steps(train, steps_per_epoch=10) == 64_000
  train.num_steps, train.num_epochs = 0, 2.5
  assert optim.total_steps(train, steps_per_epoch=7) == 18
