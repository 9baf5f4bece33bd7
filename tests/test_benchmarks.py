"""The step benchmark's FLOP count (benchmarks/train_step.py), which every platform's
fraction of the matrix-multiply peak rests on."""

import pytest
from flax import nnx

from benchmarks import train_step
from resnet_jax import parallel
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
