"""GroupBatchNorm: statistics per group of examples, running averages, dtypes; the
unbiased running variance against PyTorch's (in a process of its own, as in
test_pretrained.py)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax import pretrained
from resnet_jax.models import create_model
from resnet_jax.models.norm import GroupBatchNorm
from resnet_jax.pretrained import layouts

REFERENCE = Path(__file__).with_name('torch_reference.py')


def _reference(x, eps=1e-5):
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + eps)


@pytest.fixture
def x_nhwc():
  rng = np.random.default_rng(0)
  # two groups with very different statistics, so whole-batch stats would differ
  x = rng.normal(size=(8, 3, 3, 5)).astype(np.float32)
  x[4:] = 10 * x[4:] + 7
  return x


def test_statistics_are_per_group(x_nhwc):
  norm = GroupBatchNorm(5, group_size=4)
  y = np.asarray(norm(jnp.asarray(x_nhwc)))
  expected = np.concatenate([_reference(x_nhwc[:4]), _reference(x_nhwc[4:])])
  np.testing.assert_allclose(y, expected, atol=1e-4)


@pytest.mark.parametrize('group_size', [0, 8, 32])
def test_whole_batch_when_group_is_zero_or_not_smaller(x_nhwc, group_size):
  norm = GroupBatchNorm(5, group_size=group_size)
  np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x_nhwc))), _reference(x_nhwc), atol=1e-4)


def test_one_pass_variance_holds_at_a_large_mean_and_never_goes_negative():
  """E[x^2] - E[x]^2 in float32: accurate where the mean is 30x the std (ResNet-50's
  layers stay under ~7x at initialization), and clipped at 0 where rounding makes it
  negative (a constant 7.3: -2.3e-5 unclipped, below -epsilon, which would give NaN)."""
  x = np.random.default_rng(1).normal(30, 1, size=(32, 8, 8, 4)).astype(np.float32)
  norm = GroupBatchNorm(4)
  norm(jnp.asarray(x))
  expected_var = 0.9 + 0.1 * x.astype(np.float64).var(axis=(0, 1, 2))
  np.testing.assert_allclose(norm.var[...], expected_var, rtol=1e-4)
  y = GroupBatchNorm(4)(jnp.full((32, 8, 8, 4), 7.3))
  np.testing.assert_allclose(y, 0.0, atol=1e-3)  # NaN without the clip


def test_batch_not_divisible_into_groups_is_a_clear_error(x_nhwc):
  norm = GroupBatchNorm(5, group_size=3)
  with pytest.raises(ValueError, match='bn_group_size'):
    norm(jnp.asarray(x_nhwc))


def test_negative_group_size_rejected():
  with pytest.raises(ValueError, match='>= 0'):
    GroupBatchNorm(5, group_size=-1)


def test_running_averages_move_towards_mean_of_group_statistics(x_nhwc):
  norm = GroupBatchNorm(5, group_size=4, momentum=0.9)
  norm(jnp.asarray(x_nhwc))
  group_means = [x_nhwc[:4].mean(axis=(0, 1, 2)), x_nhwc[4:].mean(axis=(0, 1, 2))]
  group_vars = [x_nhwc[:4].var(axis=(0, 1, 2)), x_nhwc[4:].var(axis=(0, 1, 2))]
  np.testing.assert_allclose(norm.mean[...], 0.1 * np.mean(group_means, axis=0), rtol=1e-5)
  np.testing.assert_allclose(norm.var[...], 0.9 + 0.1 * np.mean(group_vars, axis=0), rtol=1e-5)


def test_unbiased_running_variance_scales_each_group_by_m_over_m_minus_1(x_nhwc):
  """m = 4 examples x 3 x 3 positions per group: the running variance takes in the groups'
  unbiased variances; the output (biased variance) is the same as without."""
  biased, unbiased = (
    GroupBatchNorm(5, group_size=4),
    GroupBatchNorm(5, group_size=4, unbiased_var=True),
  )
  y_biased, y_unbiased = biased(jnp.asarray(x_nhwc)), unbiased(jnp.asarray(x_nhwc))
  np.testing.assert_array_equal(y_unbiased, y_biased)
  np.testing.assert_array_equal(unbiased.mean[...], biased.mean[...])
  group_vars = [x_nhwc[:4].var(axis=(0, 1, 2), ddof=1), x_nhwc[4:].var(axis=(0, 1, 2), ddof=1)]
  np.testing.assert_allclose(unbiased.var[...], 0.9 + 0.1 * np.mean(group_vars, axis=0), rtol=1e-5)


def test_unbiased_variance_of_one_value_per_channel_is_a_clear_error():
  with pytest.raises(ValueError, match='more than one value per channel'):
    GroupBatchNorm(5, group_size=1, unbiased_var=True)(jnp.ones((2, 1, 1, 5)))


def _torch_train(*args: str):
  """tests/torch_reference.py train ...; skips without torch (fails under CI=true)."""
  missing = [m for m in ('torch', 'torchvision', 'timm') if importlib.util.find_spec(m) is None]
  if missing:
    message = f'{", ".join(missing)} missing: pip install -r requirements-dev.txt'
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(message)
    pytest.skip(message)
  command = [sys.executable, str(REFERENCE), 'train', '--arch=resnet18', *args]
  result = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]


def test_unbiased_running_variance_gives_pytorchs_eval_logits(tmp_path):
  """torchvision's ResNet-18 (our random initialization, exported), one training-mode pass
  over 16 images of 64x64 (whole-batch statistics), then eval-mode logits. The biased
  running variance is smaller by (m - 1)/m, down to 63/64 in the last stage (m = 16 x 2 x
  2), and the logits differ by ~2e-3 of their largest; the unbiased one is PyTorch's."""
  path = tmp_path / 'resnet18.safetensors'
  model_config = layouts.model_config('resnet18')  # bn_group_size=0: the whole batch
  pretrained.export(create_model(model_config, num_classes=1000, rngs=nnx.Rngs(0)), path)
  rng = np.random.default_rng(0)
  inputs = {
    'train_images': rng.normal(size=(1, 16, 64, 64, 3)).astype(np.float32),
    'train_labels': np.zeros((1, 16), np.int64),
    'images': rng.normal(size=(4, 64, 64, 3)).astype(np.float32),
  }
  np.savez(tmp_path / 'inputs.npz', **inputs)
  _torch_train(f'--weights={path}', f'--inputs={tmp_path}/inputs.npz', f'--out={tmp_path}/out')
  theirs = np.load(tmp_path / 'out.npz')['logits']
  forward = nnx.jit(lambda model, x_nhwc: model(x_nhwc))
  difference = {}
  for unbiased in (True, False):
    model = pretrained.load('torchvision', 'resnet18', path, bn_unbiased_var=unbiased)
    model.train()
    forward(model, inputs['train_images'][0])  # updates the running statistics
    model.eval()
    ours = forward(model, inputs['images'])
    difference[unbiased] = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
  print(
    'eval logits, max |ours - torch| / max |torch| with bn_unbiased_var True, False:', difference
  )
  assert difference[True] < 1e-5
  assert difference[False] > 5e-4


def test_eval_uses_running_averages_and_leaves_them_alone(x_nhwc):
  norm = GroupBatchNorm(5, group_size=0, momentum=0.0)
  norm(jnp.asarray(x_nhwc))  # momentum 0: running stats = this batch's stats
  mean_before = np.asarray(norm.mean[...])
  norm.use_running_average = True
  y = np.asarray(norm(jnp.asarray(x_nhwc[:2])))  # a batch with other statistics
  mean, var = x_nhwc.mean(axis=(0, 1, 2)), x_nhwc.var(axis=(0, 1, 2))
  np.testing.assert_allclose(y, (x_nhwc[:2] - mean) / np.sqrt(var + 1e-5), atol=1e-4)
  np.testing.assert_array_equal(norm.mean[...], mean_before)


def test_bfloat16_input_keeps_float32_statistics(x_nhwc):
  norm = GroupBatchNorm(5, group_size=4)
  y = norm(jnp.asarray(x_nhwc, jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  assert norm.mean[...].dtype == jnp.float32 and norm.scale[...].dtype == jnp.float32
  expected = np.concatenate([_reference(x_nhwc[:4]), _reference(x_nhwc[4:])])
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=5e-2)


@pytest.mark.parametrize('train, group_size', [(True, 4), (True, 0), (False, 0)])
def test_gradients_are_those_of_the_plain_formula(x_nhwc, train, group_size):
  """multiply_add's written-out backward: the same gradients as autodiff of
  (x - mean) / sqrt(var + eps) * scale + bias, for x, scale and bias."""
  norm = GroupBatchNorm(5, group_size=group_size)
  norm.scale[...] = jnp.linspace(0.5, 2.0, 5)
  norm.bias[...] = jnp.linspace(-1.0, 1.0, 5)
  norm.mean[...], norm.var[...] = jnp.linspace(-2.0, 2.0, 5), jnp.linspace(0.5, 3.0, 5)
  norm.use_running_average = not train
  cotangent = jnp.asarray(np.random.default_rng(1).normal(size=x_nhwc.shape), jnp.float32)

  def plain(x, scale, bias):
    if not train:
      return (x - norm.mean[...]) / jnp.sqrt(norm.var[...] + 1e-5) * scale + bias
    groups = x.reshape(-1, group_size or len(x), *x.shape[1:])
    mean = groups.mean(axis=(1, 2, 3), keepdims=True)
    var = groups.var(axis=(1, 2, 3), keepdims=True)
    return ((groups - mean) / jnp.sqrt(var + 1e-5) * scale + bias).reshape(x.shape)

  graphdef, _, batch_stats = nnx.split(norm, nnx.Param, nnx.BatchStat)
  batch_stats = nnx.to_pure_dict(batch_stats)

  def ours(x, scale, bias):
    return nnx.merge(graphdef, {'scale': scale, 'bias': bias}, batch_stats)(x)

  args = (jnp.asarray(x_nhwc), norm.scale[...], norm.bias[...])
  want = jax.vjp(plain, *args)[1](cotangent)
  got = jax.vjp(ours, *args)[1](cotangent)
  for got_leaf, want_leaf in zip(got, want, strict=True):
    atol = 1e-4 * np.max(np.abs(want_leaf))
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=atol)
