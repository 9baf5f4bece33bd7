"""Gradient norms and layer responses of plain and residual networks, and the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax.analysis import signals
from resnet_jax.models.resnet import create_model
from tests.entry_points import TINY, run


def _model(model_config, shortcut: str, variant: str = 'v1'):
  model_config.update(depth=8, width=4, shortcut=shortcut, variant=variant)
  model = create_model(model_config, num_classes=3, in_channels=1, rngs=nnx.Rngs(0))
  images = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
  return model, images, jnp.arange(8) % 3


@pytest.mark.parametrize('shortcut', ['A', 'none'])
def test_one_gradient_norm_per_convolution_and_the_head(model_config, shortcut):
  model, images, labels = _model(model_config, shortcut)
  norms = signals.gradient_norms(model, images, labels)
  # stem + 3 stages x 1 unit x 2 convs + head
  assert [name for name, _ in norms] == [
    'stem',
    's1u1c1',
    's1u1c2',
    's2u1c1',
    's2u1c2',
    's3u1c1',
    's3u1c2',
    'head',
  ]
  assert all(np.isfinite(v) and v > 0 for _, v in norms)


@pytest.mark.parametrize('variant', ['v1', 'preact'])
def test_responses_are_the_branch_outputs_and_change_nothing(model_config, variant):
  model, images, _ = _model(model_config, 'A', variant)
  model.eval()
  before = model(images)
  stds = signals.response_stds(model, images)
  assert [name for name, _ in stds] == ['s1u1c1', 's1u1c2', 's2u1c1', 's2u1c2', 's3u1c1', 's3u1c2']
  np.testing.assert_array_equal(model(images), before)
  assert not any(u.sow_responses for s in model.stages for u in s.units)
  # The first unit's first response, by hand.
  unit = model.stages[0].units[0]
  x = model.stem(images)
  if variant == 'preact':
    expected = unit.convs[0](jax.nn.relu(unit.norms[0](x)))
  else:
    expected = unit.norms[0](unit.convs[0](x))
  assert stds[0][1] == pytest.approx(float(jnp.std(expected)), rel=1e-5)


def test_the_cli_measures_networks_at_initialization(tmp_path):
  config_flag, *overrides = TINY
  result = run(
    '-m resnet_jax.analysis.signals',
    config_flag,
    *overrides,
    '--grid=model.shortcut=none,A',
    '--batch_size=16',
    f'--out={tmp_path / "signals.png"}',
  )
  assert result.returncode == 0, result.stderr
  assert (tmp_path / 'signals.png').stat().st_size > 1000
  measured = json.loads((tmp_path / 'signals.json').read_text())
  assert [m['network'] for m in measured] == ['plain-8', 'ResNet (A)-8']
  assert all(m['step'] == 0 and len(m['response_stds']) == 6 for m in measured)
