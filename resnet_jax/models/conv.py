"""The networks' convolutions: one parameter layout, formulations chosen per platform.

Every convolution holds `kernel` [k, k, in, out] (HWIO, float32) drawn exactly as
`nnx.Conv` draws it, so parameters, initialization and checkpoints are the same
whichever formulation computes it. Two formulations exist for XLA:CPU:

- `PointwiseConv`: a 1x1 convolution as an einsum. XLA:CPU runs it and its
  gradients several times faster than the equivalent convolution (178 vs 35
  GFLOP/s forward at 56x56, 256->64).
- `Conv(explicit_grads=True)`: a stride-1 convolution whose backward pass is
  written out as two convolutions in XLA's canonical NHWC/HWIO form. Inside a
  loop body (the stages under `lax.scan`) XLA:CPU leaves the backward
  convolutions it derives itself in non-canonical layouts and runs them in a
  naive emitter, 20-50x slower; outside loops both run at the same speed.

On GPU and TPU both lower to the same matrix units, so the plain convolution
and XLA's own gradients stay the default there.
"""

import jax
import jax.numpy as jnp
from flax import nnx

# He et al. 2015, Section 3.4: "We initialize the weights as in [13]": a
# zero-mean Gaussian with std sqrt(2 / fan), here over fan-out like torchvision.
he_normal = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
NHWC_HWIO = ('NHWC', 'HWIO', 'NHWC')


def _conv(x_nhwc: jax.Array, kernel_hwio: jax.Array, stride: int, pad: int) -> jax.Array:
  return jax.lax.conv_general_dilated(
    x_nhwc, kernel_hwio, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=NHWC_HWIO
  )


@jax.custom_vjp
def same_conv(x_nhwc: jax.Array, kernel_hwio: jax.Array) -> jax.Array:
  """A stride-1 convolution with an odd kernel, padded to keep the size."""
  return _conv(x_nhwc, kernel_hwio, 1, kernel_hwio.shape[0] // 2)


def _same_conv_forward(x_nhwc, kernel_hwio):
  return same_conv(x_nhwc, kernel_hwio), (x_nhwc, kernel_hwio)


def _same_conv_backward(residuals, dy_nhwc):
  x_nhwc, kernel_hwio = residuals
  pad = kernel_hwio.shape[0] // 2
  # d/dx: the same-size convolution of dy with the kernel flipped in space, in/out swapped.
  kernel_flipped = jnp.flip(kernel_hwio, (0, 1)).transpose(0, 1, 3, 2)
  dx_nhwc = _conv(dy_nhwc, kernel_flipped, 1, pad)
  # d/dkernel[i, j, c, d] = sum over n, h, w of x_padded[n, h+i, w+j, c] * dy[n, h, w, d]:
  # a convolution of x (channels as the batch, examples as the features) with dy as the kernel.
  x_cnhw_as_nhwc = x_nhwc.transpose(3, 1, 2, 0)
  dy_hwnd_as_hwio = dy_nhwc.transpose(1, 2, 0, 3)
  dkernel_chwd = _conv(x_cnhw_as_nhwc, dy_hwnd_as_hwio, 1, pad)
  return dx_nhwc, dkernel_chwd.transpose(1, 2, 0, 3)


same_conv.defvjp(_same_conv_forward, _same_conv_backward)


def _kernel(
  rngs: nnx.Rngs, kernel_init, kernel: int, in_channels: int, out_channels: int
) -> nnx.Param:
  """The kernel parameter, drawn from the same key and shape as `nnx.Conv`'s."""
  shape = (kernel, kernel, in_channels, out_channels)
  return nnx.Param(kernel_init(rngs.params(), shape, jnp.float32))


class Conv(nnx.Module):
  """A bias-free square convolution padded symmetrically, as in the papers and torchvision.

  Flax's 'SAME' padding puts the extra row at the bottom for strided convs on
  even sizes, which would shift every downsampled feature map by a pixel
  relative to the reference implementations.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int,
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    kernel_init=he_normal,
    explicit_grads: bool = False,
  ):
    self.kernel = _kernel(rngs, kernel_init, kernel, in_channels, out_channels)
    self.strides = stride
    self.dtype = dtype
    # Only stride-1 odd kernels have the written-out backward (all a scan body holds).
    self.explicit_grads = explicit_grads and stride == 1 and kernel % 2 == 1

  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    x_nhwc = x_nhwc.astype(self.dtype)
    kernel_hwio = self.kernel[...].astype(self.dtype)
    if self.explicit_grads:
      return same_conv(x_nhwc, kernel_hwio)
    return _conv(x_nhwc, kernel_hwio, self.strides, (kernel_hwio.shape[0] - 1) // 2)


class PointwiseConv(nnx.Module):
  """A 1x1 convolution written as a matrix product over channels."""

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    stride: int,
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    kernel_init=he_normal,
  ):
    self.kernel = _kernel(rngs, kernel_init, 1, in_channels, out_channels)
    self.strides = stride
    self.dtype = dtype

  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    if self.strides > 1:  # an unpadded strided 1x1 convolution reads every s-th pixel
      x_nhwc = x_nhwc[:, :: self.strides, :: self.strides, :]
    kernel_cd = self.kernel[...][0, 0].astype(self.dtype)
    return jnp.einsum('bhwc,cd->bhwd', x_nhwc.astype(self.dtype), kernel_cd)


def conv(
  in_channels: int,
  out_channels: int,
  kernel: int,
  stride: int = 1,
  *,
  dtype: jnp.dtype,
  rngs: nnx.Rngs,
  kernel_init=he_normal,
  pointwise_einsum: bool = False,
  explicit_grads: bool = False,
) -> Conv | PointwiseConv:
  """A `PointwiseConv` for a 1x1 kernel with `pointwise_einsum`, a `Conv` otherwise."""
  if kernel == 1 and pointwise_einsum:
    return PointwiseConv(
      in_channels, out_channels, stride, dtype=dtype, rngs=rngs, kernel_init=kernel_init
    )
  return Conv(
    in_channels, out_channels, kernel, stride,
    dtype=dtype, rngs=rngs, kernel_init=kernel_init, explicit_grads=explicit_grads,
  )  # fmt: skip
