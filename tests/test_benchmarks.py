"""The step benchmark's FLOP count (benchmarks/train_step.py), which every platform's
fraction of the matrix-multiply peak rests on."""

import pytest
from flax import nnx

from benchmarks import table6, train_step
from resnet_jax import parallel
from resnet_jax.data import original_files
from resnet_jax.models import create_model
from resnet_jax.models.summary import summarize

BATCH = 4


def step_flops(mode: str, **model_fields) -> int:
  config = train_step.benchmark_config('resnet20', BATCH, model_fields, cpu_options='xla')
  _, step, args, _ = train_step.build_step(config, mode, parallel.create_mesh())
  return train_step.matmul_flops(step, args)


@pytest.fixture(scope='module')
def eval_flops() -> int:
  return step_flops('eval', conv1x1='conv')


def test_eval_step_flops_are_the_networks_multiply_adds(eval_flops):
  config = train_step.benchmark_config('resnet20', BATCH, {})
  model = create_model(config.model, num_classes=10, rngs=nnx.Rngs(0))
  macs = sum(row.macs for row in summarize(model, (32, 32, 3)))
  assert eval_flops == 2 * BATCH * macs


@pytest.mark.parametrize('fields', [{'conv1x1': 'conv'}, {'conv1x1': 'einsum', 'scan': True}])
def test_train_step_is_three_forward_passes(eval_flops, fields):
  """Forward, input gradients, weight gradients: each the forward's matrix work, however
  the 1x1 convolutions are written and whether the units are scanned or unrolled."""
  assert 2.9 * eval_flops <= step_flops('train', **fields) <= 3 * eval_flops


def test_table6_times_a_network_of_k_seeds_on_cifar10_shaped_files(tmp_path):
  """benchmarks.table6: its random CIFAR-10 files read as CIFAR-10's, and a network's hours
  for 64k steps from its timed step."""
  table6.write_random_cifar10(str(tmp_path), examples_per_file=16)
  train = original_files.load('cifar10', str(tmp_path), 'train')
  assert train.images.shape == (80, 32, 32, 3) and train.images.std() > 50
  config = table6.network_config('plain8', str(tmp_path), [('train.cpu_options', 'ynn:dot')])
  assert config.model.shortcut == 'none' and config.data.original_dir == str(tmp_path)
  row = table6.timed(config, steps=1, seeds=2)
  assert row['step_ms'] > 0
  assert row['hours'] == pytest.approx(table6.PAPER_STEPS * row['step_ms'] / 1e3 / 3600)
  assert row['images_per_s'] == pytest.approx(2 * 128 / (row['step_ms'] / 1e3))
