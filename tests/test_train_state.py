"""The state and steps without a dataset: initialize is what experiment.setup starts from,
a skipped step keeps the state, and neither the module nor the step benchmark (the GPU
check) needs TensorFlow, TFDS, tensorboard or safetensors."""

import json

import jax
import numpy as np
import pytest

from resnet_jax import experiment, parallel, train_state
from tests.entry_points import assert_same_state, run
from tests.test_trainer import tiny_config

# Run in a subprocess first: these modules then fail to import (as where they are absent).
_ABSENT = ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'safetensors', 'torch')
_WITHOUT = f'import sys\nsys.modules.update(dict.fromkeys({_ABSENT!r}))\n'


def _initialize(config, mesh):
  return train_state.initialize(config, mesh, num_classes=10, in_channels=3, steps_per_epoch=1)


def test_experiment_setup_starts_from_initialize_with_the_datasets_shape():
  mesh = parallel.create_mesh()
  config = tiny_config(5)
  setup = experiment.setup(config, mesh)
  start = train_state.initialize(
    config,
    mesh,
    num_classes=setup.info.num_classes,
    in_channels=setup.info.num_channels,
    steps_per_epoch=setup.steps_per_epoch,
  )
  assert (setup.info.num_classes, setup.total_steps) == (10, start.total_steps) == (10, 5)
  assert setup.graphdef == start.graphdef
  assert_same_state(setup.state, start.state)
  assert start.state.params['head']['kernel'].sharding.is_fully_replicated


def test_skipped_step_keeps_the_state_and_counts():
  mesh = parallel.create_mesh()
  start = _initialize(tiny_config(1), mesh)
  options = train_state.StepOptions(skip_nonfinite=True)
  step = train_state.make_train_step(start.graphdef, start.tx, start.schedule, mesh, options)
  before = jax.device_get(start.state)
  batch = {'image': np.full((32, 8, 8, 3), np.nan, np.float32), 'label': np.zeros(32, np.int32)}
  state, step_metrics = step(start.state, parallel.shard_batch(batch, mesh))
  assert float(step_metrics['nonfinite']) == 1 and int(state.step) == 1
  assert_same_state(state.replace(step=before.step), before)


@pytest.mark.parametrize('gate, masks_change', [('dropout', True), ('off', False)])
def test_each_step_draws_its_own_dropout_masks(gate, masks_change):
  """The step key is the run's key folded with the step: the same state and batch at
  another step give another loss under the dropout shortcut, the same loss without it."""
  mesh = parallel.create_mesh()
  config = tiny_config(2)
  config.model.gate = gate
  start = _initialize(config, mesh)
  step = train_state.make_train_step(start.graphdef, start.tx, start.schedule, mesh)
  batch = parallel.shard_batch(
    {'image': np.ones((32, 8, 8, 3), np.float32), 'label': np.zeros(32, np.int32)}, mesh
  )
  losses = []
  for step_number in (0, 1, 0):
    state = jax.device_get(start.state)  # the step donates its input
    state = parallel.replicate(state.replace(step=np.int32(step_number)), mesh)
    losses.append(float(step(state, batch)[1]['loss']))
  assert losses[0] == losses[2] and np.isfinite(losses[0])
  assert (losses[0] != losses[1]) == masks_change


def test_module_does_not_import_tensorflow():
  result = run(
    '-c',
    'import sys, resnet_jax.train_state\n'
    f'print(sorted(m for m in sys.modules if m.split(".")[0] in {_ABSENT!r}))',
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'


def test_step_benchmark_runs_without_tensorflow():
  code = _WITHOUT + (
    'import runpy\n'
    "sys.argv = ['train_step', '--model=resnet20', '--no-torch', '--steps=2', '--batch=8',"
    " '--cpu-options=ynn:dot', '--set', 'optim.ema_decay=0.9', '--set=data.mixup_alpha=0.2']\n"
    "runpy.run_module('benchmarks.train_step', run_name='__main__')\n"
  )
  result = run('-c', code)
  assert result.returncode == 0, result.stderr
  line = json.loads(result.stdout.strip().splitlines()[-1])
  assert (line['model'], line['mode'], line['batch'], line['platform']) == (
    'resnet20',
    'train',
    8,
    'cpu',
  )
  assert line['overrides'] == {'optim.ema_decay': '0.9', 'data.mixup_alpha': '0.2'}
  assert line['images_per_s'] > 0 and line['gflop_per_image'] > 0
  assert line['torch_images_per_s'] is None
