"""Per-unit and stacked layouts of a network's state: exact, both ways, inside optimizer states."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from resnet_jax.models import create_model, layout, network_spec


def _state(model_config, **fields):
  """(params, batch_stats) as pure dicts, the layout the model stores."""
  model_config.update(fields)
  model = create_model(model_config, num_classes=10, rngs=nnx.Rngs(0))
  _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def _assert_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize('depth', [14, 20])  # 2 and 3 units per stage: 1 and 2 stacked
def test_stacking_the_unrolled_state_gives_the_scanned_models_state(model_config, depth):
  unrolled = _state(model_config.copy_and_resolve_references(), depth=depth, scan=False)
  stacked = _state(model_config, depth=depth, scan=True)
  assert stacked[0]['stages'][1]['repeated']['convs'][0]['kernel'].shape[0] == depth // 6 - 1
  assert list(stacked[0]['stages'][1]['units']) == [0]
  _assert_equal(layout.to_stacked(unrolled, network_spec(model_config, platform='cpu')), stacked)
  _assert_equal(layout.to_per_unit(stacked), unrolled)
  # Idempotent, and the unrolled layout is kept for a model without scan.
  _assert_equal(layout.to_stacked(stacked, model_config), stacked)
  _assert_equal(layout.to_per_unit(unrolled), unrolled)
  model_config.scan = False
  _assert_equal(layout.to_stacked(stacked, model_config), unrolled)


def test_optimizer_states_convert_with_the_parameters(model_config):
  params, _ = _state(model_config, scan=True)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
  grads = jax.tree.map(lambda p: np.full_like(p, 0.5), params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  per_unit = layout.to_per_unit(opt_state)
  trace = per_unit[1][0].trace  # TraceState(trace=params_like)
  assert jax.tree.structure(trace) == jax.tree.structure(layout.to_per_unit(params))
  np.testing.assert_array_equal(
    trace['stages'][2]['units'][2]['convs'][1]['kernel'],
    opt_state[1][0].trace['stages'][2]['repeated']['convs'][1]['kernel'][1],
  )
  _assert_equal(layout.to_stacked(per_unit, model_config), opt_state)


def test_abstract_leaves_convert_by_shape(model_config):
  params, _ = _state(model_config, scan=True)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  per_unit = layout.to_per_unit(abstract)
  want = jax.tree.map(lambda x: (x.shape, x.dtype), layout.to_per_unit(params))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), per_unit) == want
  assert layout.to_stacked(per_unit, model_config) == abstract
