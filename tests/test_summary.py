"""Multiply-add counting and the `python -m resnet_jax.models` summary command."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.models import create_model
from resnet_jax.models.summary import count_macs, summarize

ROOT = Path(__file__).resolve().parents[1]


def test_convolution_multiply_adds():
  x = jnp.ones((2, 16, 16, 8))
  kernel = jnp.ones((3, 3, 8, 4))
  conv = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  assert count_macs(conv, x, kernel) == 2 * 8 * 8 * 4 * (3 * 3 * 8)


def test_grouped_convolution_counts_input_channels_per_group():
  x = jnp.ones((1, 4, 4, 8))
  kernel = jnp.ones((1, 1, 2, 8))  # 4 groups of 2 input channels
  conv = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=4
  )
  assert count_macs(conv, x, kernel) == 4 * 4 * 8 * 2


def test_strided_convolution_gradient_counts_as_the_convolution():
  """The input gradient of a stride-2 convolution is a convolution over an input
  dilated by 2 (3 zeros in 4): it does the forward's multiply-adds, not 4x them."""
  x = jnp.ones((2, 16, 16, 8))
  kernel = jnp.ones((3, 3, 8, 4))
  conv = lambda x: jax.lax.conv_general_dilated(
    x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  input_grad = jax.linear_transpose(conv, x)
  forward = count_macs(conv, x)
  assert count_macs(input_grad, conv(x)) == forward == 2 * 8 * 8 * 4 * (3 * 3 * 8)


def test_matmul_inside_jit_and_scan_is_counted_per_iteration():
  w = jnp.ones((5, 6, 6))

  @jax.jit
  def layers(x, w):
    return jax.lax.scan(lambda h, w_i: (h @ w_i, None), x, w)[0]

  assert count_macs(layers, jnp.ones((3, 6)), w) == 5 * 3 * 6 * 6


def _summary(*overrides: str) -> subprocess.CompletedProcess:
  env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run(
    [sys.executable, '-m', 'resnet_jax.models', '--config=configs/resnet20_cifar10.py', *overrides],
    cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
  )  # fmt: skip


def test_summary_command_prints_the_stage_table():
  result = _summary('--config.model.depth=110')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].startswith('ResNet-110 (cifar stem, basic units, shortcut A')
  assert any(line.split()[:2] == ['stage3', '18'] and '8x8x64' in line for line in lines)
  assert lines[-1] == '1.73M parameters, 0.253G multiply-adds per image'


def test_summary_command_rejects_an_impossible_depth_in_one_line():
  result = _summary('--config.model.depth=21')
  assert result.returncode != 0
  assert (
    result.stderr.strip()
    .splitlines()[-1]
    .startswith('error: a CIFAR network with basic units has depth 6n+2')
  )
  assert 'Traceback' not in result.stderr


def test_scanned_stages_count_as_the_unrolled_ones(model_config):
  """Stacked units: the same units, parameters and multiply-adds per row."""
  rows = []
  for scan in (False, True):
    model_config.scan = scan
    model = create_model(model_config, num_classes=10, rngs=nnx.Rngs(0))
    rows.append(summarize(model, (32, 32, 3)))
  assert rows[0] == rows[1]
  assert [row.units for row in rows[1]] == [0, 3, 3, 3, 0]
