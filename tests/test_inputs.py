"""data.pipeline='device' through the train step and the loop: the step gathers its own batch
(that of its step), a run evaluates every example once and resumes exactly; on eight
devices, with several seeds, as on one."""

import jax
import numpy as np
import pytest

from resnet_jax import inputs, parallel, train_state, trainer
from resnet_jax.data import device_data
from tests.data_fixtures import tiny_tfds_dataset
from tests.entry_points import assert_eight_devices_train_as_one, assert_same_state, restore_state
from tests.test_trainer import tiny_config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A prepared TFDS dataset: 30 train / 7 test 8x8x1 images of 3 classes."""
  path = tmp_path_factory.mktemp('tfds')
  tiny_tfds_dataset(path)
  return str(path)


def device_config(data_dir, num_steps, num_seeds=1, scan=False):
  config = tiny_config(num_steps)
  config.train.num_seeds = num_seeds
  if scan:  # Stages of two units, the second scanned and recomputed in the backward pass.
    config.model.depth, config.model.scan, config.model.remat = 14, True, True
  config.data.dataset, config.data.data_dir = 'tiny_digits', data_dir
  config.data.train_split, config.data.eval_split = 'train', 'test'
  config.data.pipeline, config.data.crop_padding = 'device', 2
  config.train.batch_size, config.train.eval_batch_size = 8, 4  # Batches straddle epochs.
  config.train.eval_every = 2
  return config


def test_the_step_trains_on_the_batch_of_its_own_step(data_dir):
  """Two steps gathering their batches equal two plain steps fed batches 0 and 1."""
  config, mesh = device_config(data_dir, 2), parallel.create_mesh()
  start = train_state.initialize(
    config, mesh, num_classes=3, in_channels=1, steps_per_epoch=3, pretrained_weights=False
  )
  train = inputs.train_inputs(config, mesh, start_step=0)
  gathering = train_state.train_step(config, start, mesh, train.batch_from)
  plain = train_state.train_step(config, start, mesh)
  arrays = next(train.stream)
  batch = jax.jit(train.batch_from)
  copy = lambda state: jax.tree.map(np.array, state)
  a, b = parallel.replicate(copy(start.state), mesh), parallel.replicate(copy(start.state), mesh)
  for step in range(2):
    a, metrics_a = gathering(a, arrays)
    b, metrics_b = plain(b, parallel.shard_batch(jax.device_get(batch(arrays, step)), mesh))
    assert float(metrics_a['loss']) == pytest.approx(float(metrics_b['loss']), rel=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


def test_a_device_pipeline_run_evaluates_every_example_and_resumes_exactly(data_dir, tmp_path):
  trainer.train_and_evaluate(device_config(data_dir, 2), tmp_path / 'a')
  resumed = trainer.train_and_evaluate(device_config(data_dir, 6), tmp_path / 'a')
  straight = trainer.train_and_evaluate(device_config(data_dir, 6), tmp_path / 'b')
  assert resumed == straight and resumed['num_examples'] == 7
  assert_same_state(restore_state(tmp_path / 'a'), restore_state(tmp_path / 'b'))


def test_the_eval_batches_are_the_device_datas(data_dir):
  """inputs.eval_batches serves device_data's batches, normalized by the train split."""
  config, mesh = device_config(data_dir, 2), parallel.create_mesh()
  served = list(inputs.eval_batches(config, mesh, batch_size=4))
  train = device_data.load_split(config.data, 'train')
  test = device_data.load_split(config.data, 'test')
  preprocessing = device_data.Preprocessing.from_config(config.data, train)
  expected = list(device_data.eval_batches(preprocessing, test.images, test.labels, batch_size=4))
  assert len(served) == len(expected) == 2
  for got, want in zip(served, expected, strict=True):
    jax.tree.map(np.testing.assert_array_equal, got, want)
  assert np.asarray(served[1]['mask']).tolist() == [True, True, True, False]


def test_eight_devices_train_as_one_with_seeds_scan_and_remat(data_dir):
  """The batches gathered inside the step, of two seeds (train.num_seeds), split over eight
  devices, through scanned stages with remat: the same two steps as on one device."""
  assert_eight_devices_train_as_one(
    'from tests.test_inputs import device_config',
    f'device_config({data_dir!r}, 2, num_seeds=2, scan=True)',
    num_classes=3,
    in_channels=1,
  )
