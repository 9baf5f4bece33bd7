"""Residual units and their shortcuts.

A unit is a residual branch of convolutions plus a shortcut (He et al. 2015,
"Deep Residual Learning for Image Recognition"):

  post-activation (v1, v1.5):  y = relu(BN(conv(... relu(BN(conv(x))))) + shortcut(x))
  pre-activation  (preact):    y = conv(relu(BN(... conv(relu(BN(x)))))) + shortcut(x)

the second from He et al. 2016, "Identity Mappings in Deep Residual Networks".
Shortcut options follow the paper's Section 3.3 (A, B, C), Bag of Tricks (D),
and `none` drops the shortcut to give the plain network of the same depth.

Identity Mappings' ablations are options too. Table 1 (what multiplies the shortcut
h and the branch F in y = h + F), as `gate`: `constant` (0.5 h + 0.5 F),
`exclusive` ((1 - g) h + g F) and `shortcut_only` ((1 - g) h + F), with
g = sigmoid(1x1 conv(x) + b) and b starting at `gate_bias`, and `dropout` (m h + F,
m a Bernoulli(0.5) mask per element in training, 0.5 in evaluation); the 1x1-conv
shortcut is option C. Table 2 (where BN and ReLU sit), as `variant`: `bn_after_add`
(relu(BN(conv-BN-ReLU-conv + h))), `relu_before_add` (relu(BN(...)) + h),
`relu_preact` (ReLU-conv-BN-ReLU-conv-BN + h) and `preact` (full pre-activation).
Table 3's one-layer units (a single 3x3 convolution in the branch) are the block
`one_layer`.

Stochastic depth (Huang et al. 2016), as timm's ResNets do it: in training, each unit
drops its residual branch F (before the shortcut is added or gated) for each example
with its own probability p, and scales the kept ones by 1 / (1 - p), so the expected
output is the whole unit's; in evaluation it keeps F as it is. The network gives each
unit its p (`drop_rate`, see `resnet.NetworkSpec.drop_rates`).
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.models.conv import conv, he_normal
from resnet_jax.models.norm import GroupBatchNorm

BLOCKS = ('basic', 'bottleneck', 'one_layer')
SHORTCUTS = ('A', 'B', 'C', 'D', 'none')
VARIANTS = ('v1', 'v1.5', 'preact', 'bn_after_add', 'relu_before_add', 'relu_preact')
GATES = ('off', 'constant', 'exclusive', 'shortcut_only', 'dropout')
# The dropout shortcut keeps each element of h with this probability in training and
# scales h by it in evaluation: "a scale of lambda with an expectation of 0.5" (Table 1).
DROPOUT_SHORTCUT_KEEP = 0.5
# Variants whose unit ends with a ReLU after the addition (f = ReLU in the paper's terms).
RELU_AFTER_ADD = ('v1', 'v1.5', 'bn_after_add')
BOTTLENECK_EXPANSION = 4
# A unit's probability of dropping its branch: a float, a scalar array (scanned), None: never.
DropRate = float | jax.Array | None


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
  gate: str = 'off'  # what scales the shortcut and the branch (Identity Mappings Table 1)
  gate_bias: float = 0.0  # initial bias b of the gates g = sigmoid(1x1 conv + b)
  bn_unbiased_var: bool = False  # BN keeps the unbiased running variance (norm.py)

  def batch_norm(self, num_features: int, *, scale_init: float = 1.0) -> GroupBatchNorm:
    """A BatchNorm with the network's statistics groups and running variance."""
    return GroupBatchNorm(
      num_features,
      group_size=self.bn_group_size,
      scale_init=scale_init,
      unbiased_var=self.bn_unbiased_var,
    )


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
    bn_unbiased_var: bool = False,
  ):
    self.pool_stride = stride if avg_pool else 1
    conv_stride = 1 if avg_pool else stride
    self.conv = conv(
      in_channels, out_channels, 1, conv_stride, dtype=dtype, rngs=rngs,
      pointwise_einsum=pointwise_einsum, explicit_grads=explicit_grads,
    )  # fmt: skip
    self.norm = (
      GroupBatchNorm(out_channels, group_size=bn_group_size, unbiased_var=bn_unbiased_var)
      if with_norm
      else None
    )

  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    if self.pool_stride > 1:
      # ceil mode, padding excluded from the average (torchvision/timm's D)
      window = (self.pool_stride, self.pool_stride)
      x_nhwc = nnx.avg_pool(x_nhwc, window, window, padding='SAME', count_include_pad=False)
    y = self.conv(x_nhwc)
    return y if self.norm is None else self.norm(y)


class ShortcutGate(nnx.Module):
  """Combines the shortcut h and the branch F of a unit other than by h + F (He et al.
  2016, Table 1): constant scaling, exclusive or shortcut-only gating, or dropout on
  the shortcut. The gate g = sigmoid(W x + b) is a 1x1 convolution of the unit's input,
  with a bias."""

  def __init__(
    self, in_channels: int, out_channels: int, stride: int, options: UnitOptions, rngs: nnx.Rngs
  ):
    self.kind = options.gate
    self.deterministic = False  # model.train() / model.eval() set it; only dropout reads it
    if self.kind in ('constant', 'dropout'):
      return
    self.conv = conv(
      in_channels, out_channels, 1, stride, dtype=options.dtype, rngs=rngs,
      pointwise_einsum=options.pointwise_einsum,
    )  # fmt: skip
    self.bias = nnx.Param(jnp.full((out_channels,), options.gate_bias, jnp.float32))

  def __call__(
    self,
    x_nhwc: jax.Array,
    shortcut_nhwc: jax.Array,
    branch_nhwc: jax.Array,
    key: jax.Array | None = None,
  ):
    if self.kind == 'constant':
      return 0.5 * shortcut_nhwc + 0.5 * branch_nhwc
    if self.kind == 'dropout':
      return self._dropped(shortcut_nhwc, key) + branch_nhwc
    g = jax.nn.sigmoid(self.conv(x_nhwc) + self.bias[...].astype(x_nhwc.dtype))
    branch_scale = g if self.kind == 'exclusive' else 1.0
    return (1 - g) * shortcut_nhwc + branch_scale * branch_nhwc

  def _dropped(self, shortcut_nhwc: jax.Array, key: jax.Array | None) -> jax.Array:
    if self.deterministic:
      return DROPOUT_SHORTCUT_KEEP * shortcut_nhwc
    if key is None:
      raise ValueError(
        'the dropout shortcut samples a mask in training mode: call the model with key=... '
        '(the train step does), or put it in evaluation mode with model.eval()'
      )
    keep = jax.random.bernoulli(key, DROPOUT_SHORTCUT_KEEP, shortcut_nhwc.shape)
    return jnp.where(keep, shortcut_nhwc, jnp.zeros_like(shortcut_nhwc))


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
    bn_unbiased_var=options.bn_unbiased_var,
  )


def branch_layout(
  block: str, variant: str, in_channels: int, out_channels: int, stride: int
) -> list[tuple[int, int, int, int]]:
  """(in_channels, out_channels, kernel, stride) of each convolution of the residual branch."""
  if block == 'one_layer':
    return [(in_channels, out_channels, 3, stride)]
  if block == 'basic':
    return [(in_channels, out_channels, 3, stride), (out_channels, out_channels, 3, 1)]
  mid = out_channels // BOTTLENECK_EXPANSION
  # v1 (the paper) and its Table 2 rearrangements stride the first 1x1; v1.5
  # (torchvision) and the pre-activation units (He et al. 2016 code) stride the 3x3.
  stride_1x1, stride_3x3 = (1, stride) if variant in ('v1.5', 'preact') else (stride, 1)
  return [
    (in_channels, mid, 1, stride_1x1),
    (mid, mid, 3, stride_3x3),
    (mid, out_channels, 1, 1),
  ]


class ResidualUnit(nnx.Module):
  """A basic, bottleneck or one-layer unit, in any variant (activation placement), with any
  shortcut option and gate. `key` is the randomness of training mode: the dropout
  shortcut's masks, and with a `drop_rate` (the probability of dropping the branch, a
  float or a scanned scalar; None: never) stochastic depth's."""

  def __init__(
    self, in_channels: int, out_channels: int, stride: int, options: UnitOptions, *, rngs: nnx.Rngs
  ):
    self.variant = options.variant
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
        options.batch_norm(
          c_in if self.preact else c_out, scale_init=0.0 if zero_norm and i == last else 1.0
        )
        for i, (c_in, c_out, _, _) in enumerate(layout)
      ]
    )
    self.shortcut = make_shortcut(in_channels, out_channels, stride, options, rngs)
    gated = options.gate != 'off'
    self.gate = ShortcutGate(in_channels, out_channels, stride, options, rngs) if gated else None
    self.sow_responses = False  # analysis.signals turns it on, under nnx.capture
    self.deterministic = False  # model.train() / model.eval() set it (stochastic depth)

  def _response(self, y: jax.Array) -> jax.Array:
    """A branch layer's response (post-activation: after BN, before ReLU or the addition,
    as in He et al. 2015's Figure 7), sown as 'responses' when `sow_responses` is on."""
    if self.sow_responses:
      self.sow(nnx.Intermediate, 'responses', y)
    return y

  def __call__(
    self, x_nhwc: jax.Array, key: jax.Array | None = None, drop_rate: DropRate = None
  ) -> jax.Array:
    if self.preact:
      return self._preact_forward(x_nhwc, key, drop_rate)
    last = len(self.convs) - 1
    y = jax.nn.relu(x_nhwc) if self.variant == 'relu_preact' else x_nhwc
    for i, (conv_i, norm_i) in enumerate(zip(self.convs, self.norms, strict=True)):
      y = conv_i(y)
      if i < last or self.variant != 'bn_after_add':  # bn_after_add: the last BN follows the sum
        y = norm_i(y)
      y = self._response(y)
      if i < last or self.variant == 'relu_before_add':
        y = jax.nn.relu(y)
    y = self._add_shortcut(x_nhwc, y, x_nhwc, key, drop_rate)
    if self.variant == 'bn_after_add':
      y = self.norms[last](y)
    return jax.nn.relu(y) if self.variant in RELU_AFTER_ADD else y

  def _preact_forward(
    self, x_nhwc: jax.Array, key: jax.Array | None, drop_rate: DropRate
  ) -> jax.Array:
    x_act = jax.nn.relu(self.norms[0](x_nhwc))
    y = self._response(self.convs[0](x_act))
    for conv_i, norm_i in zip(self.convs[1:], self.norms[1:], strict=True):
      y = self._response(conv_i(jax.nn.relu(norm_i(y))))
    # A projection sees the pre-activated input (as in He et al. 2016's code);
    # option A stays a pure identity path.
    projects = isinstance(self.shortcut, ProjectionShortcut)
    return self._add_shortcut(x_nhwc, y, x_act if projects else x_nhwc, key, drop_rate)

  def _add_shortcut(
    self,
    x_nhwc: jax.Array,
    branch_nhwc: jax.Array,
    shortcut_in: jax.Array,
    key: jax.Array | None,
    drop_rate: DropRate,
  ):
    """h + F (h: the shortcut of `shortcut_in`), or as the gate combines them; F alone in a
    plain network. F is first dropped or scaled by stochastic depth."""
    if not self.residual:
      return branch_nhwc
    branch_nhwc = self._drop_path(branch_nhwc, key, drop_rate)
    h_nhwc = x_nhwc if self.shortcut is None else self.shortcut(shortcut_in)
    if self.gate is None:
      return branch_nhwc + h_nhwc
    return self.gate(x_nhwc, h_nhwc, branch_nhwc, key)

  def _drop_path(
    self, branch_nhwc: jax.Array, key: jax.Array | None, drop_rate: DropRate
  ) -> jax.Array:
    """Stochastic depth: F x keep / (1 - p) per example, keep ~ Bernoulli(1 - p) (timm's
    drop_path with scale_by_keep). Its key is folded from the unit's, which the dropout
    shortcut uses as it is."""
    if drop_rate is None or self.deterministic:
      return branch_nhwc
    if key is None:
      raise ValueError(
        'stochastic depth (model.drop_path_rate) drops residual branches in training mode: '
        'call the model with key=... (the train step does), or put it in evaluation mode '
        'with model.eval()'
      )
    keep_prob = 1 - jnp.asarray(drop_rate, jnp.float32)
    kept_n = jax.random.bernoulli(jax.random.fold_in(key, 1), keep_prob, branch_nhwc.shape[:1])
    scale_n111 = jnp.where(kept_n, 1 / keep_prob, 0.0)[:, None, None, None]
    return (branch_nhwc.astype(jnp.float32) * scale_n111).astype(branch_nhwc.dtype)
