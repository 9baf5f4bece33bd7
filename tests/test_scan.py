"""Stages under lax.scan and per-unit rematerialization: the same network, computed otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax.models import create_model, layout


def _split(model_config, **fields):
  model_config.update(fields)  # the group of 32 examples would exceed these batches
  model_config.bn_group_size = 0
  model = create_model(model_config, num_classes=10, rngs=nnx.Rngs(0))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def _train_step_outputs(graphdef, params, batch_stats, x_nhwc):
  """Logits, parameter gradients and updated BN statistics of one training-mode pass
  (with one key: a dropout shortcut and stochastic depth draw the same masks scanned or
  not)."""

  def loss(params, batch_stats):
    model = nnx.merge(graphdef, params, batch_stats)
    logits = model(x_nhwc, key=jax.random.key(2))
    new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    return jnp.mean(jnp.square(logits)), (logits, new_stats)

  (_, (logits, new_stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
    params, batch_stats
  )
  return logits, grads, new_stats


NETWORKS = {
  'resnet20': dict(depth=20),
  'resnet29-bottleneck-preact': dict(depth=29, block='bottleneck', variant='preact'),
  'plain20-C': dict(depth=20, shortcut='C'),
  'resnet20-dropout-shortcut': dict(depth=20, gate='dropout'),
  'resnet11-one-layer-preact': dict(depth=11, block='one_layer', variant='preact'),
  'resnet20-drop-path': dict(depth=20, drop_path_rate=0.5),
  'resnet29-bottleneck-preact-C-drop-path-dropout-shortcut': dict(
    depth=29,
    block='bottleneck',
    variant='preact',
    shortcut='C',
    drop_path_rate=0.5,
    gate='dropout',
  ),
}


@pytest.mark.parametrize(
  'network, execution',
  [
    ('resnet20', dict(scan=True)),
    ('resnet20', dict(remat=True)),
    ('resnet20', dict(scan=True, remat=True)),
    ('resnet29-bottleneck-preact', dict(scan=True)),
    ('plain20-C', dict(scan=True)),
    # Random gates under scan: drop-path by default, the dropout shortcut with the slow tests.
    pytest.param('resnet20-dropout-shortcut', dict(scan=True, remat=True), marks=pytest.mark.slow),
    ('resnet11-one-layer-preact', dict(scan=True)),
    ('resnet20-drop-path', dict(scan=True, remat=True)),
    pytest.param(
      'resnet29-bottleneck-preact-C-drop-path-dropout-shortcut',
      dict(scan=True, remat=True),
      marks=pytest.mark.slow,
    ),
  ],
)
def test_scan_and_remat_compute_the_unrolled_network(model_config, network, execution):
  x_nhwc = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  reference_config = model_config.copy_and_resolve_references()
  graphdef, params, batch_stats = _split(reference_config, **NETWORKS[network])
  other_graphdef, other_params, other_stats = _split(model_config, **NETWORKS[network], **execution)
  # Stored stacked under scan; the same values unit for unit: checkpoints load either way.
  if execution.get('scan'):
    assert other_params['stages'][2]['repeated']['convs'][0]['kernel'].shape[0] == 2
  per_unit = layout.to_per_unit((other_params, other_stats))
  assert jax.tree.structure(per_unit) == jax.tree.structure((params, batch_stats))
  jax.tree.map(np.testing.assert_array_equal, per_unit, (params, batch_stats))
  want = _train_step_outputs(graphdef, params, batch_stats, x_nhwc)
  got = _train_step_outputs(other_graphdef, other_params, other_stats, x_nhwc)
  got = layout.to_per_unit(got)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-5, atol=1e-5)
  # BN statistics moved, and equally, for every unit (the scanned ones are written back).
  assert not np.allclose(want[2]['stages'][2]['units'][2]['norms'][0]['mean'], 0)


def test_scanned_eval_mode_uses_running_statistics(model_config):
  graphdef, params, batch_stats = _split(model_config, scan=True)
  batch_stats = jax.tree.map(lambda v: v + 0.5, batch_stats)
  unrolled_graphdef, _, _ = _split(model_config, scan=False)
  x_nhwc = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  logits = []
  for g, state in (
    (graphdef, (params, batch_stats)),
    (unrolled_graphdef, layout.to_per_unit((params, batch_stats))),
  ):
    model = nnx.merge(g, *state)
    model.eval()
    logits.append(model(x_nhwc))
  np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def test_scan_keeps_the_compiled_step_flat_in_depth(model_config):
  """Under scan the compiled program holds one unit body per stage, and one array per
  parameter of a stage's repeated units, whatever the depth."""
  x_nhwc = jnp.ones((2, 8, 8, 3))

  def arrays_and_convolutions(depth):
    config = model_config.copy_and_resolve_references()
    graphdef, params, batch_stats = _split(config, depth=depth, scan=True)
    step = jax.jit(lambda p, s: _train_step_outputs(graphdef, p, s, x_nhwc))
    lowered = step.lower(params, batch_stats).as_text()
    return len(jax.tree.leaves((params, batch_stats))), lowered.count('convolution')

  assert arrays_and_convolutions(20) == arrays_and_convolutions(56)
