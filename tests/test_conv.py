"""The convolution formulations: same parameters, outputs and gradients as nnx.Conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax.models.conv import Conv, PointwiseConv, conv, same_conv


def _reference(in_channels, out_channels, kernel, stride, seed):
  """Flax's own convolution with the papers' symmetric padding."""
  pad = (kernel - 1) // 2
  return nnx.Conv(
    in_channels, out_channels, (kernel, kernel), strides=stride,
    padding=((pad, pad), (pad, pad)), use_bias=False,
    kernel_init=nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
    rngs=nnx.Rngs(seed),
  )  # fmt: skip


def _value_and_grads(module, x):
  def loss(module, x):
    return jnp.sum(jnp.sin(module(x)))

  grad_module, grad_x = nnx.grad(loss, argnums=(0, 1))(module, x)
  return module(x), grad_module.kernel[...], grad_x


def _assert_same_as_reference(module, reference, x):
  np.testing.assert_array_equal(module.kernel[...], reference.kernel[...])  # same init
  for got, want in zip(_value_and_grads(module, x), _value_and_grads(reference, x), strict=True):
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize(
  'kernel, stride, explicit_grads',
  [(3, 1, True), (3, 1, False), (7, 2, False), (7, 2, True), (1, 1, True), (5, 1, True)],
)
def test_conv_equals_flax_conv_with_its_gradients(kernel, stride, explicit_grads):
  module = conv(
    6, 10, kernel, stride, dtype=jnp.float32, rngs=nnx.Rngs(3), explicit_grads=explicit_grads
  )
  assert isinstance(module, Conv)
  # Strided convolutions keep XLA's own backward: a scan body holds only stride 1.
  assert module.explicit_grads == (explicit_grads and stride == 1)
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 6))  # odd size: padding must match
  _assert_same_as_reference(module, _reference(6, 10, kernel, stride, 3), x)


@pytest.mark.parametrize('stride', [1, 2])
def test_pointwise_einsum_equals_the_1x1_convolution_with_its_gradients(stride):
  einsum = conv(16, 24, 1, stride, dtype=jnp.float32, rngs=nnx.Rngs(3), pointwise_einsum=True)
  assert isinstance(einsum, PointwiseConv)
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 16))  # odd: the strided read's size
  _assert_same_as_reference(einsum, _reference(16, 24, 1, stride, 3), x)


def test_explicit_gradients_in_bfloat16_match_xla_s():
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 16))
  explicit, plain = (
    conv(16, 16, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(1), explicit_grads=e) for e in (True, False)
  )
  for got, want in zip(_value_and_grads(explicit, x), _value_and_grads(plain, x), strict=True):
    assert got.dtype == want.dtype
    np.testing.assert_allclose(
      np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=0.05, atol=0.05
    )


def test_explicit_gradients_inside_a_scan_are_canonical_convolutions():
  """The reason they exist: XLA:CPU's own backward convolutions in a loop body keep
  non-canonical layouts (and run in a slow naive emitter); the written-out ones do not."""
  kernels = jax.random.normal(jax.random.key(0), (3, 3, 3, 8, 8))

  def loss(kernels, x):
    def body(h, kernel):
      return jnp.tanh(same_conv(h, kernel)), None

    return jnp.sum(jax.lax.scan(body, x, kernels)[0])

  x = jnp.ones((2, 6, 6, 8))
  hlo = jax.jit(jax.grad(loss)).lower(kernels, x).compile().as_text()
  convolutions = [line for line in hlo.splitlines() if 'dim_labels=' in line]
  assert len(convolutions) >= 3  # forward, input gradient, kernel gradient
  layouts = {line.split('dim_labels=')[1].split(',')[0] for line in convolutions}
  assert layouts == {'b01f_01io->b01f'}
