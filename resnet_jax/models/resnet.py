"""Stems, stages and the ImageNet and CIFAR residual networks, with the depth table.

ImageNet networks (He et al. 2015, Table 1): a 7x7/2 convolution and a 3x3/2
max-pool, four stages of 64/128/256/512 filters (x4 outputs for bottlenecks).
CIFAR networks (Section 4.2): a 3x3 convolution with 16 filters, three stages
of 16/32/64 filters, n units each; depth 6n+2 with basic units, 9n+2 with
bottlenecks (He et al. 2016: ResNet-164 and ResNet-1001), 3n+2 with one-layer
units (He et al. 2016, Table 3).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from resnet_jax.errors import ConfigError
from resnet_jax.models.blocks import (
  BLOCKS,
  BOTTLENECK_EXPANSION,
  GATES,
  SHORTCUTS,
  VARIANTS,
  ResidualUnit,
  UnitOptions,
)
from resnet_jax.models.conv import conv

# depth -> (block, units per stage), He et al. 2015 Table 1; 200 from He et al. 2016.
IMAGENET_DEPTHS = {
  18: ('basic', (2, 2, 2, 2)),
  34: ('basic', (3, 4, 6, 3)),
  50: ('bottleneck', (3, 4, 6, 3)),
  101: ('bottleneck', (3, 4, 23, 3)),
  152: ('bottleneck', (3, 8, 36, 3)),
  200: ('bottleneck', (3, 24, 36, 3)),
}
CIFAR_LAYERS_PER_UNIT = {'basic': 2, 'bottleneck': 3, 'one_layer': 1}
CIFAR_STAGES = 3
STEMS = ('imagenet', 'cifar')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
MODEL_FIELDS = (
  'depth', 'block', 'stem', 'shortcut', 'variant', 'width',
  'zero_init_residual', 'bn_group_size', 'dtype', 'conv1x1', 'scan', 'remat', 'gate', 'gate_bias',
  'drop_path_rate', 'bn_unbiased_var',
)  # fmt: skip
CONV1X1 = ('auto', 'einsum', 'conv')
# Fields that choose how the network is computed, not what it is: the same
# parameters and (to float tolerance) the same outputs whatever their values.
EXECUTION_FIELDS = ('dtype', 'conv1x1', 'scan', 'remat')


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """A network's shape, resolved and validated from `config.model`."""

  stem: str
  width: int
  units_per_stage: tuple[int, ...]
  unit: UnitOptions
  scan: bool = False  # each stage's repeated units run under one lax.scan
  remat: bool = False  # each unit's activations are recomputed in the backward pass
  drop_path_rate: float = 0.0  # stochastic depth: the last unit's drop probability

  @property
  def stochastic(self) -> bool:
    """Whether training mode samples randomness (the dropout shortcut, stochastic depth)."""
    return self.unit.gate == 'dropout' or self.drop_path_rate > 0

  @property
  def drop_rates(self) -> tuple[tuple[float, ...], ...] | None:
    """Each stage's units' probabilities of dropping their residual branch in training:
    rate x i / (N - 1) for unit i of the network's N, counted from 0 over all stages
    (timm's linear decay: the first unit never, the last with the rate); None at rate 0."""
    if not self.drop_path_rate:
      return None
    last = sum(self.units_per_stage) - 1
    rates = [self.drop_path_rate * i / last for i in range(last + 1)]
    starts = [sum(self.units_per_stage[:i]) for i in range(len(self.units_per_stage))]
    return tuple(
      tuple(rates[start : start + n]) for start, n in zip(starts, self.units_per_stage, strict=True)
    )

  @property
  def stage_channels(self) -> tuple[int, ...]:
    """Output channels of each stage."""
    expansion = BOTTLENECK_EXPANSION if self.unit.block == 'bottleneck' else 1
    return tuple(self.width * 2**i * expansion for i in range(len(self.units_per_stage)))


def _choose(field: str, value, allowed) -> None:
  if value not in allowed:
    raise ConfigError(f'model.{field}={value!r} is not one of {", ".join(map(repr, allowed))}')


def _cifar_units(depth: int, block: str) -> int:
  """Units per stage n, from depth = 3 * layers_per_unit * n + 2."""
  per_depth = CIFAR_STAGES * CIFAR_LAYERS_PER_UNIT[block]
  if depth < per_depth + 2 or (depth - 2) % per_depth:
    fits = [
      other
      for other, layers in CIFAR_LAYERS_PER_UNIT.items()
      if depth >= CIFAR_STAGES * layers + 2 and (depth - 2) % (CIFAR_STAGES * layers) == 0
    ]
    hint = ''
    if fits:
      hint = f" (depth {depth} is a {fits[0]}-unit depth: set model.block='{fits[0]}')"
    raise ConfigError(
      f'a CIFAR network with {block} units has depth {per_depth}n+2 '
      f'(e.g. {per_depth + 2}, {3 * per_depth + 2}, {9 * per_depth + 2}), got {depth}{hint}'
    )
  return (depth - 2) // per_depth


def network_spec(model_config, *, platform: str) -> NetworkSpec:
  """Validates `config.model` and resolves it for `platform`, the kind of device that runs
  the network ('cpu', 'gpu', 'tpu'): on 'cpu', 1x1 convolutions default to einsum and
  stride-1 convolutions write their backward pass out (the XLA:CPU formulations in `conv`;
  same parameters and, to float tolerance, outputs). A ConfigError names what is allowed."""
  cfg = ml_collections.ConfigDict(model_config)
  unknown = sorted(set(cfg.keys()) - set(MODEL_FIELDS))
  missing = sorted(set(MODEL_FIELDS) - set(cfg.keys()))
  if unknown or missing:
    raise ConfigError(
      f'config.model has unknown fields {unknown} / lacks fields {missing}; '
      f'the fields are {", ".join(MODEL_FIELDS)}'
    )
  _choose('stem', cfg.stem, STEMS)
  _choose('block', cfg.block, ('auto', *BLOCKS))
  _choose('shortcut', cfg.shortcut, SHORTCUTS)
  _choose('variant', cfg.variant, VARIANTS)
  _choose('dtype', cfg.dtype, tuple(DTYPES))
  _choose('conv1x1', cfg.conv1x1, CONV1X1)
  _choose('gate', cfg.gate, GATES)
  if cfg.gate != 'off' and cfg.shortcut == 'none':
    raise ConfigError(f"model.gate='{cfg.gate}' scales a shortcut: a plain network has none")
  if cfg.zero_init_residual and cfg.variant == 'bn_after_add':
    raise ConfigError(
      "model.zero_init_residual=True with variant 'bn_after_add' would zero the BN after the "
      'addition, so the whole unit: set zero_init_residual=False'
    )
  if not isinstance(cfg.bn_group_size, int) or cfg.bn_group_size < 0:
    raise ConfigError(f'model.bn_group_size={cfg.bn_group_size!r}: expected >= 0 (0 = whole batch)')
  rate = cfg.drop_path_rate
  if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
    raise ConfigError(f'model.drop_path_rate={rate!r}: expected 0 <= rate < 1 (0 = off)')
  if rate and cfg.shortcut == 'none':
    raise ConfigError(
      f'model.drop_path_rate={rate!r} drops residual branches: a plain network '
      "(shortcut='none') has only its branch; use a residual shortcut or drop_path_rate=0"
    )
  if not isinstance(cfg.bn_unbiased_var, bool):
    raise ConfigError(f'model.bn_unbiased_var={cfg.bn_unbiased_var!r}: expected True or False')
  if not isinstance(cfg.width, int) or cfg.width < 1:
    raise ConfigError(f'model.width must be a positive integer, got {cfg.width!r}')
  if cfg.zero_init_residual and cfg.shortcut == 'none':
    raise ConfigError(
      'model.zero_init_residual=True with shortcut none would zero every layer of a plain '
      'network: use a residual shortcut (A, B, C, D) or zero_init_residual=False'
    )

  if cfg.stem == 'imagenet':
    if cfg.depth not in IMAGENET_DEPTHS:
      raise ConfigError(
        f'an ImageNet ResNet has depth {", ".join(map(str, IMAGENET_DEPTHS))}; got {cfg.depth}'
      )
    block, units = IMAGENET_DEPTHS[cfg.depth]
    if cfg.block not in ('auto', block):
      raise ConfigError(
        f'ImageNet ResNet-{cfg.depth} uses {block} units (He et al. 2015 Table 1); '
        f"got model.block='{cfg.block}': use 'auto' or '{block}'"
      )
  else:
    # 164 is both 6n+2 and 9n+2: bottlenecks must be asked for explicitly.
    block = 'basic' if cfg.block == 'auto' else cfg.block
    units = (_cifar_units(cfg.depth, block),) * CIFAR_STAGES

  unit = UnitOptions(
    block=block,
    variant=cfg.variant,
    shortcut=cfg.shortcut,
    zero_init_residual=cfg.zero_init_residual,
    bn_group_size=cfg.bn_group_size,
    dtype=DTYPES[cfg.dtype],
    pointwise_einsum=platform == 'cpu' if cfg.conv1x1 == 'auto' else cfg.conv1x1 == 'einsum',
    explicit_conv_grads=platform == 'cpu',
    gate=cfg.gate,
    gate_bias=float(cfg.gate_bias),
    bn_unbiased_var=cfg.bn_unbiased_var,
  )
  return NetworkSpec(
    stem=cfg.stem,
    width=cfg.width,
    units_per_stage=units,
    unit=unit,
    scan=cfg.scan,
    remat=cfg.remat,
    drop_path_rate=float(rate),
  )


class Stem(nnx.Module):
  """7x7/2 conv + 3x3/2 max-pool (ImageNet) or a 3x3 conv (CIFAR).

  Pre-activation networks leave the stem without BN-ReLU: the first unit
  starts with its own (He et al. 2016's code; timm's ResNetV2).
  """

  def __init__(self, spec: NetworkSpec, in_channels: int, *, rngs: nnx.Rngs):
    imagenet = spec.stem == 'imagenet'
    kernel, stride = (7, 2) if imagenet else (3, 1)
    self.max_pool = imagenet
    self.conv = conv(
      in_channels, spec.width, kernel, stride,
      dtype=spec.unit.dtype, rngs=rngs, explicit_grads=spec.unit.explicit_conv_grads,
    )  # fmt: skip
    preact = spec.unit.variant == 'preact'
    self.norm = None if preact else spec.unit.batch_norm(spec.width)

  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    y = self.conv(x_nhwc)
    if self.norm is not None:
      y = jax.nn.relu(self.norm(y))
    if self.max_pool:
      y = nnx.max_pool(y, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    return y


class Stage(nnx.Module):
  """Units at one resolution; the first may downsample and widen.

  With `scan`, the units after the first (all of one shape) are stored as one
  `repeated` unit whose parameters and BN statistics are stacked on a leading
  axis (built unit by unit, so they hold the unrolled network's draws), and
  run as one `lax.scan` over that state: the step compiles one unit body, and
  holds one array per parameter, whatever the depth. XLA also cannot fuse
  across units (on CPU it otherwise recomputes whole chains of
  post-activation unit outputs inside backward fusions). Checkpoints and
  pretrained weights keep one entry per unit (`layout` converts). With
  `remat`, each unit keeps only its input for the backward pass. A `key` is
  split into one per unit, the same ones whether the units are scanned or not.
  `drop_rates`: each unit's stochastic depth probability (None: none drops); the
  repeated units take theirs as scanned inputs.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    num_units: int,
    stride: int,
    options: UnitOptions,
    *,
    scan: bool = False,
    remat: bool = False,
    drop_rates: tuple[float, ...] | None = None,
    rngs: nnx.Rngs,
  ):
    self.scan = scan
    self.remat = remat
    self.num_units = num_units
    self.drop_rates = drop_rates
    units = [
      ResidualUnit(
        in_channels if i == 0 else out_channels,
        out_channels,
        stride if i == 0 else 1,
        options,
        rngs=rngs,
      )
      for i in range(num_units)
    ]
    stacked = scan and num_units > 1
    self.units = nnx.List(units[:1] if stacked else units)
    self.repeated = _stacked(units[1:]) if stacked else None

  def __call__(self, x_nhwc: jax.Array, key: jax.Array | None = None) -> jax.Array:
    unit_keys = None if key is None else jax.random.split(key, self.num_units)
    for i, unit in enumerate(self.units):
      x_nhwc = self._apply(unit, x_nhwc, None if key is None else unit_keys[i], self._rate(i))
    if self.repeated is not None:
      rates = None if self.drop_rates is None else jnp.asarray(self.drop_rates[1:], jnp.float32)
      x_nhwc = self._scan(x_nhwc, None if key is None else unit_keys[1:], rates)
    return x_nhwc

  def _rate(self, i: int) -> float | None:
    """Unit i's drop probability; None where it is 0 (the network's first unit), which
    then samples nothing, as in timm."""
    if self.drop_rates is None or not self.drop_rates[i]:
      return None
    return self.drop_rates[i]

  def _unit_fn(self, graphdef: nnx.GraphDef):
    """(x, (unit state, key, drop rate)) -> (unit output, its updated BN statistics), a
    pure function."""

    def apply(x_nhwc, unit_inputs):
      state, key, drop_rate = unit_inputs
      unit = nnx.merge(graphdef, state)
      return unit(x_nhwc, key, drop_rate), nnx.state(unit, nnx.BatchStat)

    return jax.checkpoint(apply, prevent_cse=not self.scan) if self.remat else apply

  def _apply(
    self, unit: ResidualUnit, x_nhwc: jax.Array, key: jax.Array | None, drop_rate: float | None
  ) -> jax.Array:
    if not self.remat:
      return unit(x_nhwc, key, drop_rate)
    graphdef, state = nnx.split(unit)
    y, batch_stats = self._unit_fn(graphdef)(x_nhwc, (state, key, drop_rate))
    nnx.update(unit, batch_stats)
    return y

  def _scan(
    self, x_nhwc: jax.Array, keys: jax.Array | None, drop_rates: jax.Array | None
  ) -> jax.Array:
    graphdef, stacked = nnx.split(self.repeated)
    y, batch_stats = jax.lax.scan(self._unit_fn(graphdef), x_nhwc, (stacked, keys, drop_rates))
    nnx.update(self.repeated, batch_stats)
    return y


def _stacked(units: list[ResidualUnit]) -> ResidualUnit:
  """One unit whose state is `units`' states (all of one shape) stacked on a leading axis."""
  states = [nnx.state(unit) for unit in units]
  return nnx.merge(nnx.graphdef(units[0]), jax.tree.map(lambda *leaves: jnp.stack(leaves), *states))


class ResNet(nnx.Module):
  """stem -> stages -> (final BN-ReLU for pre-activation) -> global average pool -> linear."""

  def __init__(self, spec: NetworkSpec, *, num_classes: int, in_channels: int, rngs: nnx.Rngs):
    self.spec = spec
    self.stem = Stem(spec, in_channels, rngs=rngs)
    channels_in = (spec.width, *spec.stage_channels[:-1])
    drop_rates = spec.drop_rates or (None,) * len(spec.units_per_stage)
    self.stages = nnx.List(
      [
        Stage(
          c_in,
          c_out,
          n,
          1 if i == 0 else 2,
          spec.unit,
          scan=spec.scan,
          remat=spec.remat,
          drop_rates=rates,
          rngs=rngs,
        )  # fmt: skip
        for i, (c_in, c_out, n, rates) in enumerate(
          zip(channels_in, spec.stage_channels, spec.units_per_stage, drop_rates, strict=True)
        )
      ]
    )
    final_channels = spec.stage_channels[-1]
    preact = spec.unit.variant == 'preact'
    self.final_norm = spec.unit.batch_norm(final_channels) if preact else None
    # ReLU-only pre-activation ends with the extra ReLU He et al. 2016 put after the
    # last unit's addition (their appendix); full pre-activation with the BN-ReLU above.
    self.final_relu = spec.unit.variant == 'relu_preact'
    self.head = nnx.Linear(final_channels, num_classes, param_dtype=jnp.float32, rngs=rngs)

  def stage_outputs(self, x_nhwc: jax.Array, key: jax.Array | None = None) -> list[jax.Array]:
    """The raw output of each stage. `key`: the randomness of training mode, used only by
    a stochastic network (`spec.stochastic`: the dropout shortcut, stochastic depth), which
    needs one."""
    if not self.spec.stochastic:
      key = None  # nothing samples: keep the key out of the computation
    y = self.stem(x_nhwc.astype(self.spec.unit.dtype))
    outputs = []
    for i, stage in enumerate(self.stages):
      y = stage(y, None if key is None else jax.random.fold_in(key, i))
      outputs.append(y)
    return outputs

  def _finish(self, y_nhwc: jax.Array) -> jax.Array:
    """The final (BN-)ReLU of pre-activation networks (identity otherwise)."""
    if self.final_norm is not None:
      return jax.nn.relu(self.final_norm(y_nhwc))
    return jax.nn.relu(y_nhwc) if self.final_relu else y_nhwc

  def features(self, x_nhwc: jax.Array, *, key: jax.Array | None = None) -> list[jax.Array]:
    """The output of each stage (C2..C5 for ImageNet networks: strides 4, 8, 16, 32)."""
    outputs = self.stage_outputs(x_nhwc, key)
    outputs[-1] = self._finish(outputs[-1])
    return outputs

  def logits(self, last_stage_nhwc: jax.Array) -> jax.Array:
    """(final BN-ReLU,) global average pool and the linear classifier, in float32."""
    pooled_nc = jnp.mean(self._finish(last_stage_nhwc).astype(jnp.float32), axis=(1, 2))
    return self.head(pooled_nc)

  def __call__(self, x_nhwc: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """NHWC images -> float32 logits [batch, num_classes]. `key`: see `stage_outputs`."""
    return self.logits(self.stage_outputs(x_nhwc, key)[-1])


def create_model(
  model_config,
  *,
  num_classes: int,
  in_channels: int = 3,
  rngs: nnx.Rngs,
  platform: str | None = None,
) -> ResNet:
  """The network `config.model` describes, in training mode (BN on batch statistics), for
  `platform` (see `network_spec`; default: JAX's default backend, where it will run)."""
  if num_classes < 1 or in_channels < 1:
    raise ValueError(f'num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}')
  spec = network_spec(model_config, platform=platform or jax.default_backend())
  return ResNet(spec, num_classes=num_classes, in_channels=in_channels, rngs=rngs)
