"""TrainState, its initialization, and the jit-compiled train and eval steps.

The Flax NNX model is split once into a static graphdef and pure-dict state
(parameters, BN statistics); each step is a pure function of that state and a
batch, compiled once, replicated over the mesh while the batch is sharded
along `data`. Everything a resumed run needs is in TrainState: the input
position is the step (the data iterator is a pure function of seed and step),
and the step's random key is derived from `rng` and the step.

Nothing here reads a dataset: the caller says how many classes and input
channels there are. So the steps (and benchmarks/train_step.py) run without
TensorFlow, which only `resnet_jax.data` imports.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from resnet_jax import autotune, metrics, mixing, optim, parallel
from resnet_jax.models import create_model, network_spec
from resnet_jax.pretrained import finetune


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: dict  # nnx.Param values, as a pure nested dict
  batch_stats: dict  # nnx.BatchStat values (BN running averages)
  opt_state: Any
  rng: jax.Array  # uint32 key data of the run's base key
  ema: dict  # {'params', 'batch_stats'}: their moving averages (optim.ema_decay); {} when off


@dataclasses.dataclass(frozen=True)
class Start:
  """What the first step starts from."""

  graphdef: nnx.GraphDef
  state: TrainState  # replicated over the mesh
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  total_steps: int
  steps_per_epoch: int
  num_classes: int
  in_channels: int


def initialize(
  config: ml_collections.ConfigDict,
  mesh,
  *,
  num_classes: int,
  in_channels: int,
  steps_per_epoch: int,
  pretrained_weights: bool = True,
) -> Start:
  """Model, optimizer and initial state from the config (parameters from config.seed, or
  config.pretrained.weights; `pretrained_weights=False` skips reading that file, for a
  state that a checkpoint replaces). The config is taken as checked
  (`experiment.check_config`); the network is built for the mesh's kind of device."""
  total_steps = optim.total_steps(config.train, steps_per_epoch)
  tx, schedule = optim.create_optimizer(
    config.optim,
    batch_size=config.train.batch_size,
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
  )
  initial = [
    _initial_state(config, seed, tx, num_classes, in_channels, mesh, pretrained_weights)
    for seed in seeds(config)
  ]
  graphdef = initial[0][0]
  state = initial[0][1] if len(initial) == 1 else _stack_seeds([s for _, s in initial])
  return Start(
    graphdef,
    parallel.replicate(state, mesh),
    tx,
    schedule,
    total_steps,
    steps_per_epoch,
    num_classes=num_classes,
    in_channels=in_channels,
  )


def _initial_state(config, seed, tx, num_classes, in_channels, mesh, load_weights):
  """(graphdef, TrainState) of the run of `seed`: parameters from the seed's key, or the
  pretrained file (with a head of the seed's)."""
  key = jax.random.key(seed)
  model = _model(
    config,
    num_classes=num_classes,
    in_channels=in_channels,
    key=jax.random.fold_in(key, 0),
    platform=parallel.platform(mesh),
    load_weights=load_weights,
  )
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=jax.random.key_data(jax.random.fold_in(key, 1)),
    ema=_copy({'params': params, 'batch_stats': batch_stats}) if config.optim.ema_decay else {},
  )
  return graphdef, state


def seeds(config: ml_collections.ConfigDict) -> list[int]:
  """The seeds of the runs a config trains at once: config.seed, then the next
  train.num_seeds - 1."""
  return [config.seed + i for i in range(config.train.num_seeds)]


# What each seed of a train.num_seeds > 1 run has its own of, stacked on a leading axis;
# the step count is shared (vmap's axes of a TrainState).
SEED_FIELDS = ('params', 'batch_stats', 'opt_state', 'rng', 'ema')
SEED_AXES = TrainState(step=None, params=0, batch_stats=0, opt_state=0, rng=0, ema=0)


def _stack_seeds(states: list[TrainState]) -> TrainState:
  """One TrainState of several seeds' states (at the same step)."""
  stacked = {
    f: jax.tree.map(lambda *xs: jnp.stack(xs), *(getattr(s, f) for s in states))
    for f in SEED_FIELDS
  }
  return states[0].replace(**stacked)


def map_seeds(fn, state: TrainState, num_seeds: int) -> TrainState:
  """`fn` (of a tree, e.g. layout.to_per_unit) applied to each seed's part of the state's
  stacked fields; to the state itself where it holds one seed."""
  if num_seeds == 1:
    return fn(state)
  per_seed = {f: getattr(state, f) for f in SEED_FIELDS}
  mapped = {f: jax.vmap(fn)(tree) for f, tree in per_seed.items() if jax.tree.leaves(tree)}
  return state.replace(**mapped)


def _copy(tree):
  """New buffers: the step donates the state, and a buffer may not be donated twice."""
  return jax.tree.map(jnp.copy, tree)


def _model(config, *, num_classes, in_channels, key, platform, load_weights):
  """The network in training mode, with pretrained weights and frozen BatchNorms as
  config.pretrained and config.optim say."""
  model = create_model(
    config.model,
    num_classes=num_classes,
    in_channels=in_channels,
    rngs=nnx.Rngs(params=key),
    platform=platform,
  )
  model.train()
  finetune.prepare(
    model,
    config.pretrained,
    frozen_backbone=config.optim.backbone_lr_scale == 0,
    load_weights=load_weights,
  )
  return model


def _graphdef(config, start: Start, mesh, conv1x1: str) -> nnx.GraphDef:
  """start.graphdef, with 1x1 convolutions formulated as `conv1x1` says (the same
  parameters): built abstractly, no weights computed or read."""
  model_config = ml_collections.ConfigDict(config.model)
  model_config.conv1x1 = conv1x1
  platform = parallel.platform(mesh)
  einsum = lambda model: network_spec(model, platform=platform).unit.pointwise_einsum
  if einsum(model_config) == einsum(config.model):
    return start.graphdef
  other = ml_collections.ConfigDict(config)
  other.model = model_config
  abstract = nnx.eval_shape(
    lambda: _model(
      other,
      num_classes=start.num_classes,
      in_channels=start.in_channels,
      key=jax.random.key(0),
      platform=platform,
      load_weights=False,
    )
  )
  return nnx.graphdef(abstract)


def train_step(config: ml_collections.ConfigDict, start: Start, mesh, batch_from=None):
  """The train step of `config`, compiled as config.train.cpu_options says (autotune.py);
  `batch_from` as make_train_step's."""

  def make(graphdef, compiler_options):
    return make_train_step(
      graphdef,
      start.tx,
      start.schedule,
      mesh,
      StepOptions.from_config(config, start.steps_per_epoch),
      compiler_options=compiler_options,
      batch_from=batch_from,
      num_seeds=config.train.num_seeds,
    )

  return _tuned(config, start, mesh, 'train', make)


def eval_step(config: ml_collections.ConfigDict, start: Start, mesh):
  """The eval step of `config`, compiled as config.train.cpu_options says."""

  def make(graphdef, compiler_options):
    return make_eval_step(
      graphdef, mesh, compiler_options=compiler_options, num_seeds=config.train.num_seeds
    )

  return _tuned(config, start, mesh, 'eval', make)


def _tuned(config, start: Start, mesh, step: str, make) -> autotune.TunedStep:
  """`make(graphdef, compiler_options)` for the choice of autotune.tuned."""
  return autotune.tuned(
    lambda choice: make(_graphdef(config, start, mesh, choice.conv1x1), choice.compiler_options()),
    step=step,
    model_config=config.model,
    cpu_options=config.train.cpu_options,
    mesh=mesh,
    donates_first_argument=step == 'train',  # make_train_step donates the state
  )


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What a train step computes besides forward, backward and update (all off by default)."""

  loss: str = 'softmax'  # metrics.loss's kind
  bce_threshold: float = 0.0
  label_smoothing: float = 0.0
  mix: mixing.Mixing = mixing.Mixing()  # mixup / CutMix
  grad_accum_steps: int = 1  # micro-batches per update
  ema_decay: float = 0.0  # 0: TrainState.ema is {} and stays so
  ema_every: int = 1
  ema_start: int = 0  # steps during which the EMA is the weights themselves
  skip_nonfinite: bool = False

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, steps_per_epoch: int) -> 'StepOptions':
    warmup = optim.warmup_steps(config.optim, steps_per_epoch)
    return cls(
      loss=config.optim.loss,
      bce_threshold=config.optim.bce_target_threshold,
      label_smoothing=config.optim.label_smoothing,
      mix=mixing.Mixing.from_config(config.data),
      grad_accum_steps=config.train.grad_accum_steps,
      ema_decay=config.optim.ema_decay,
      ema_every=config.optim.ema_every,
      ema_start=warmup if config.optim.ema_after_warmup else 0,
      skip_nonfinite=config.train.on_nonfinite == 'skip',
    )


# fold_in constant of the mixing's key: the model's randomness keeps the step key itself.
_MIXING_STREAM = 1 << 16


def make_train_step(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh,
  options: StepOptions = StepOptions(),
  *,
  compiler_options: dict[str, str] | None = None,
  batch_from=None,
  num_seeds: int = 1,
):
  """jit(state, batch) -> (state, metrics); the input state's buffers are donated.

  `batch_from(inputs, step)`, where given, makes the batch inside the step from replicated
  `inputs` and the state's step (data.pipeline='device': the split held on the devices), and
  the step is jit(state, inputs). With `num_seeds` > 1 the state holds that many runs
  (SEED_FIELDS stacked), the batch has a leading axis of one batch per seed, and each seed's
  step is this step, vmapped: metrics have a leading seed axis. `compiler_options` are XLA's
  (`train_step` chooses them). metrics['nonfinite'] is 1 where the loss or the gradient is
  NaN or infinite; with `options.skip_nonfinite` such a step then keeps the previous
  parameters, BN statistics, EMA and optimizer state (its batch is still consumed: the step
  counts). A mixed batch (mixup/CutMix) has no one label
  per example, so its metrics have no 'top1'.
  """
  num_micro = options.grad_accum_steps

  def train_step(state: TrainState, inputs):
    batch = inputs
    if batch_from is not None:
      batch = jax.lax.with_sharding_constraint(batch_from(inputs, state.step), batch_sharding)
    if num_seeds > 1:
      return jax.vmap(seed_step, in_axes=(SEED_AXES, 0), out_axes=(SEED_AXES, 0))(state, batch)
    return seed_step(state, batch)

  def seed_step(state: TrainState, batch):
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    images, labels = batch['image'], batch['label']
    targets_bk = metrics.targets(labels, _num_classes(state.params), options.label_smoothing)
    if options.mix.enabled:
      mixing_key = jax.random.fold_in(step_key, _MIXING_STREAM)
      images, targets_bk = mixing.mix(mixing_key, images, targets_bk, options.mix)

    def loss_fn(params, images, targets_bk, key):
      model = nnx.merge(graphdef, params, state.batch_stats)
      logits = model(images, key=key)
      loss = jnp.mean(metrics.loss(logits, targets_bk, options.loss, options.bce_threshold))
      return loss, (logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_micro == 1:
      (loss, (logits, batch_stats)), grads = grad_fn(state.params, images, targets_bk, step_key)
      top1 = jnp.mean(metrics.correct_topk(logits, labels, 1))
    else:
      split = lambda x: _micro_batches(x, num_micro, mesh)
      loss, top1, batch_stats, grads = _accumulate(
        grad_fn, state.params, split(images), split(targets_bk), split(labels), step_key
      )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    grad_norm = optax.tree.norm(grads)
    nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    step_metrics = {
      'loss': loss,
      'grad_norm': grad_norm,
      'learning_rate': schedule(state.step),
      'nonfinite': nonfinite.astype(jnp.float32),
    }
    if not options.mix.enabled:
      step_metrics['top1'] = top1
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
      ema=_updated_ema(state, params, batch_stats, options),
    )
    if options.skip_nonfinite:  # The step counts either way.
      keep = lambda old, new: jnp.where(nonfinite, old, new)
      kept = {f: jax.tree.map(keep, getattr(state, f), getattr(new_state, f)) for f in SEED_FIELDS}
      new_state = new_state.replace(**kept)
    return new_state, step_metrics

  replicated = parallel.replicated_sharding(mesh)
  batch_sharding = parallel.batch_sharding(mesh, seeds=num_seeds > 1)
  return jax.jit(
    train_step,
    in_shardings=(replicated, batch_sharding if batch_from is None else replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
    compiler_options=compiler_options,
  )


def _num_classes(params: dict) -> int:
  return params['head']['kernel'].shape[-1]


def _micro_batches(x_b, num_micro: int, mesh) -> jax.Array:
  """[B, ...] -> [k, B/k, ...], micro-batch j made of the j-th k-th of each device's rows:
  each device computes its own rows, as without accumulation. With BatchNorm groups that
  fit in those k-ths, the micro-batches hold exactly the batch's groups."""
  devices = mesh.devices.size
  x = x_b.reshape(devices, num_micro, -1, *x_b.shape[1:]).swapaxes(0, 1)
  x = x.reshape(num_micro, -1, *x_b.shape[1:])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))
  return jax.lax.with_sharding_constraint(x, sharding)


def _accumulate(grad_fn, params, images, targets_bk, labels, step_key):
  """(loss, top-1, BN statistics, gradient) of k micro-batches, each from the step's state.

  Loss, top-1 and gradient are the means over the (equal) micro-batches, as over one
  batch. BatchNorm's running averages too: each micro-batch's update starts from the
  step's statistics, m * s + (1 - m) * mean_j, and their mean is the update one batch's
  group means give.
  """

  def micro_step(micro):
    images, targets_bk, labels, index = micro
    key = jax.random.fold_in(step_key, index)
    (loss, (logits, batch_stats)), grads = grad_fn(params, images, targets_bk, key)
    return loss, jnp.mean(metrics.correct_topk(logits, labels, 1)), batch_stats, grads

  num_micro = images.shape[0]
  micro_batches = (images, targets_bk, labels, jnp.arange(num_micro))
  first = jax.tree.map(lambda x: x[0], micro_batches)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(micro_step, first))
  add = lambda sums, micro: (jax.tree.map(jnp.add, sums, micro_step(micro)), None)
  sums, _ = jax.lax.scan(add, zeros, micro_batches)
  return jax.tree.map(lambda total: total / num_micro, sums)


def _updated_ema(state: TrainState, params, batch_stats, options: StepOptions) -> dict:
  """ema <- d * ema + (1 - d) * (params, BN statistics) after every `ema_every`-th step;
  until step `ema_start` (d = 0), the EMA is the weights."""
  if not state.ema:
    return state.ema
  step = state.step + 1
  decay = jnp.where(step % options.ema_every == 0, options.ema_decay, 1.0)
  decay = jnp.where(step <= options.ema_start, 0.0, decay)
  new = {'params': params, 'batch_stats': batch_stats}
  return jax.tree.map(lambda ema, x: decay * ema + (1 - decay) * x, state.ema, new)


def make_eval_step(
  graphdef: nnx.GraphDef,
  mesh,
  *,
  compiler_options: dict[str, str] | None = None,
  num_seeds: int = 1,
):
  """jit(params, batch_stats, batch) -> masked sums (see metrics.eval_sums), BN on running averages.

  10-crop batches (`image` [b, 10, H, W, C]) score each example by the mean of
  its crops' softmax probabilities, as the ResNet paper averages the scores. With
  `num_seeds` > 1, params and batch_stats hold that many seeds' (stacked), each sees the
  same batch, and the sums have a leading seed axis.
  """

  def eval_step(params, batch_stats, batch):
    model = nnx.merge(graphdef, params, batch_stats)
    model.eval()
    images = batch['image']
    if images.ndim == 5:
      b, crops = images.shape[:2]
      logits = model(images.reshape((b * crops, *images.shape[2:]))).reshape(b, crops, -1)
      probs = jnp.mean(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=1)
      logits = jnp.log(probs)
    else:
      logits = model(images)
    return metrics.eval_sums(logits, batch['label'], batch['mask'])

  if num_seeds > 1:
    eval_step = jax.vmap(eval_step, in_axes=(0, 0, None))
  return jax.jit(
    eval_step,
    out_shardings=parallel.replicated_sharding(mesh),
    compiler_options=compiler_options,
  )
