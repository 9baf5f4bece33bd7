"""Residual units and their shortcuts.

A unit is a residual branch of convolutions plus a shortcut (He et al. 2015,
"Deep Residual Learning for Image Recognition"):

  post-activation (v1, v1.5):  y = relu(BN(conv(... relu(BN(conv(x))))) + shortcut(x))
  pre-activation  (preact):    y = conv(relu(BN(... conv(relu(BN(x)))))) + shortcut(x)

the second from He et al. 2016, "Identity Mappings in Deep Residual Networks".
Shortcut options follow the paper's Section 3.3 (A, B, C), Bag of Tricks (D),
and `none` drops the shortcut to give the plain network of the same depth.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.models.conv import conv, he_normal
from resnet_jax.models.norm import GroupBatchNorm

BLOCKS = ('basic', 'bottleneck')
SHORTCUTS = ('A', 'B', 'C', 'D', 'none')
VARIANTS = ('v1', 'v1.5', 'preact')
BOTTLENECK_EXPANSION = 4


@dataclasses.dataclass(frozen=True)
class UnitOptions:
  """What every unit of a network shares (resolved from `config.model`)."""

  block: str
  variant: str
  shortcut: str
  zero_init_residual: bool
  bn_group_size: int
  dtype: jnp.dtype
  pointwise_einsum: bool = False  # 1x1 convolutions as einsum (conv.PointwiseConv)
  explicit_conv_grads: bool = False  # stride-1 convolutions' backward written out (conv.Conv)


class ZeroPadShortcut(nnx.Module):
  """Option A: identity, strided subsampling and zero-padded extra channels; no parameters."""

  def __init__(self, in_channels: int, out_channels: int, stride: int):
    if out_channels < in_channels:
      raise ValueError(
        f'shortcut A zero-pads channels and cannot reduce {in_channels} to {out_channels}: '
        'use shortcut B, C or D'
      )
    self.extra_channels = out_channels - in_channels
    self.stride = stride

  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    x_nhwc = x_nhwc[:, :: self.stride, :: self.stride, :]
    return jnp.pad(x_nhwc, ((0, 0), (0, 0), (0, 0), (0, self.extra_channels)))


class ProjectionShortcut(nnx.Module):
  """Options B, C, D: a 1x1 convolution (with BN in post-activation units).

  D (Bag of Tricks, He et al. 2019) moves the downsampling out of the 1x1
  convolution into a 2x2 average pool, so no activation is skipped over.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    stride: int,
    *,
    avg_pool: bool,
    with_norm: bool,
    bn_group_size: int,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    pointwise_einsum: bool = False,
    explicit_grads: bool = False,
  ):
    self.pool_stride = stride if avg_pool else 1
    conv_stride = 1 if avg_pool else stride
    self.conv = conv(
      in_channels, out_channels, 1, conv_stride, dtype=dtype, rngs=rngs,
      pointwise_einsum=pointwise_einsum, explicit_grads=explicit_grads,
    )  # fmt: skip
    self.norm = GroupBatchNorm(out_channels, group_size=bn_group_size) if with_norm else None

  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    if self.pool_stride > 1:
      # ceil mode, padding excluded from the average (torchvision/timm's D)
      window = (self.pool_stride, self.pool_stride)
      x_nhwc = nnx.avg_pool(x_nhwc, window, window, padding='SAME', count_include_pad=False)
    y = self.conv(x_nhwc)
    return y if self.norm is None else self.norm(y)


def make_shortcut(
  in_channels: int, out_channels: int, stride: int, options: UnitOptions, rngs: nnx.Rngs
) -> nnx.Module | None:
  """The unit's shortcut module; None for an identity (or for `none`, which has no shortcut)."""
  reshapes = stride > 1 or in_channels != out_channels
  kind = options.shortcut
  if kind == 'none' or (kind in ('A', 'B', 'D') and not reshapes):
    return None
  if kind == 'A':
    return ZeroPadShortcut(in_channels, out_channels, stride)
  return ProjectionShortcut(
    in_channels,
    out_channels,
    stride,
    avg_pool=kind == 'D',
    with_norm=options.variant != 'preact',
    bn_group_size=options.bn_group_size,
    dtype=options.dtype,
    rngs=rngs,
    pointwise_einsum=options.pointwise_einsum,
    explicit_grads=options.explicit_conv_grads,
  )


def branch_layout(
  block: str, variant: str, in_channels: int, out_channels: int, stride: int
) -> list[tuple[int, int, int, int]]:
  """(in_channels, out_channels, kernel, stride) of each convolution of the residual branch."""
  if block == 'basic':
    return [(in_channels, out_channels, 3, stride), (out_channels, out_channels, 3, 1)]
  mid = out_channels // BOTTLENECK_EXPANSION
  # v1 (the paper) strides the first 1x1; v1.5 (torchvision) and the
  # pre-activation units (He et al. 2016 code) stride the 3x3.
  stride_1x1, stride_3x3 = (stride, 1) if variant == 'v1' else (1, stride)
  return [
    (in_channels, mid, 1, stride_1x1),
    (mid, mid, 3, stride_3x3),
    (mid, out_channels, 1, 1),
  ]


class ResidualUnit(nnx.Module):
  """A basic or bottleneck unit, post- or pre-activation, with any shortcut option."""

  def __init__(
    self, in_channels: int, out_channels: int, stride: int, options: UnitOptions, *, rngs: nnx.Rngs
  ):
    self.preact = options.variant == 'preact'
    self.residual = options.shortcut != 'none'
    layout = branch_layout(options.block, options.variant, in_channels, out_channels, stride)
    last = len(layout) - 1
    # Zero init makes each residual unit start as its shortcut: the last BN's
    # scale in a post-activation unit, the last conv in a pre-activation one.
    zero_conv = options.zero_init_residual and self.preact
    zero_norm = options.zero_init_residual and not self.preact
    self.convs = nnx.List([
      conv(
        c_in, c_out, k, s,
        dtype=options.dtype,
        rngs=rngs,
        kernel_init=nnx.initializers.zeros if zero_conv and i == last else he_normal,
        pointwise_einsum=options.pointwise_einsum,
        explicit_grads=options.explicit_conv_grads,
      )
      for i, (c_in, c_out, k, s) in enumerate(layout)
    ])  # fmt: skip
    self.norms = nnx.List(
      [
        GroupBatchNorm(
          c_in if self.preact else c_out,
          group_size=options.bn_group_size,
          scale_init=0.0 if zero_norm and i == last else 1.0,
        )
        for i, (c_in, c_out, _, _) in enumerate(layout)
      ]
    )
    self.shortcut = make_shortcut(in_channels, out_channels, stride, options, rngs)

  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    if self.preact:
      return self._preact_forward(x_nhwc)
    y = x_nhwc
    for i, (conv_i, norm_i) in enumerate(zip(self.convs, self.norms, strict=True)):
      y = norm_i(conv_i(y))
      if i < len(self.convs) - 1:
        y = jax.nn.relu(y)
    if self.residual:
      y = y + (x_nhwc if self.shortcut is None else self.shortcut(x_nhwc))
    return jax.nn.relu(y)

  def _preact_forward(self, x_nhwc: jax.Array) -> jax.Array:
    x_act = jax.nn.relu(self.norms[0](x_nhwc))
    y = self.convs[0](x_act)
    for conv_i, norm_i in zip(self.convs[1:], self.norms[1:], strict=True):
      y = conv_i(jax.nn.relu(norm_i(y)))
    if not self.residual:
      return y
    if self.shortcut is None:
      return y + x_nhwc
    # A projection sees the pre-activated input (as in He et al. 2016's code);
    # option A stays a pure identity path.
    projects = isinstance(self.shortcut, ProjectionShortcut)
    return y + self.shortcut(x_act if projects else x_nhwc)
