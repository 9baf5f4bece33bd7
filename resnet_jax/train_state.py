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

from resnet_jax import autotune, metrics, optim, parallel
from resnet_jax.models import create_model, network_spec
from resnet_jax.pretrained import finetune


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: dict  # nnx.Param values, as a pure nested dict
  batch_stats: dict  # nnx.BatchStat values (BN running averages)
  opt_state: Any
  rng: jax.Array  # uint32 key data of the run's base key


@dataclasses.dataclass(frozen=True)
class Start:
  """What the first step starts from."""

  graphdef: nnx.GraphDef
  state: TrainState  # replicated over the mesh
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  total_steps: int
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
  key = jax.random.key(config.seed)
  model = _model(
    config,
    num_classes=num_classes,
    in_channels=in_channels,
    key=jax.random.fold_in(key, 0),
    platform=parallel.platform(mesh),
    load_weights=pretrained_weights,
  )
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=jax.random.key_data(jax.random.fold_in(key, 1)),
  )
  return Start(
    graphdef,
    parallel.replicate(state, mesh),
    tx,
    schedule,
    total_steps,
    num_classes=num_classes,
    in_channels=in_channels,
  )


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


def train_step(config: ml_collections.ConfigDict, start: Start, mesh):
  """The train step of `config`, compiled as config.train.cpu_options says (autotune.py)."""

  def make(graphdef, compiler_options):
    return make_train_step(
      graphdef,
      start.tx,
      start.schedule,
      mesh,
      label_smoothing=config.optim.label_smoothing,
      skip_nonfinite=config.train.on_nonfinite == 'skip',
      compiler_options=compiler_options,
    )

  return _tuned(config, start, mesh, 'train', make)


def eval_step(config: ml_collections.ConfigDict, start: Start, mesh):
  """The eval step of `config`, compiled as config.train.cpu_options says."""

  def make(graphdef, compiler_options):
    return make_eval_step(graphdef, mesh, compiler_options=compiler_options)

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


def make_train_step(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh,
  *,
  label_smoothing: float = 0.0,
  skip_nonfinite: bool = False,
  compiler_options: dict[str, str] | None = None,
):
  """jit(state, batch) -> (state, metrics); the input state's buffers are donated.

  `compiler_options` are XLA's (`train_step` chooses them). metrics['nonfinite'] is 1
  where the loss or the gradient is NaN or infinite; with `skip_nonfinite` such a step
  then keeps the previous parameters, BN statistics and optimizer state (its batch is
  still consumed: the step counts).
  """

  def train_step(state: TrainState, batch):
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state.batch_stats)
      logits = model(batch['image'], key=step_key)
      loss = jnp.mean(metrics.cross_entropy(logits, batch['label'], label_smoothing))
      return loss, (logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    grad_norm = optax.tree.norm(grads)
    nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    step_metrics = {
      'loss': loss,
      'top1': jnp.mean(metrics.correct_topk(logits, batch['label'], 1)),
      'grad_norm': grad_norm,
      'learning_rate': schedule(state.step),
      'nonfinite': nonfinite.astype(jnp.float32),
    }
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    if skip_nonfinite:
      kept = state.replace(step=state.step + 1)
      new_state = jax.tree.map(lambda old, new: jnp.where(nonfinite, old, new), kept, new_state)
    return new_state, step_metrics

  replicated = parallel.replicated_sharding(mesh)
  return jax.jit(
    train_step,
    in_shardings=(replicated, parallel.batch_sharding(mesh)),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
    compiler_options=compiler_options,
  )


def make_eval_step(graphdef: nnx.GraphDef, mesh, *, compiler_options: dict[str, str] | None = None):
  """jit(params, batch_stats, batch) -> masked sums (see metrics.eval_sums), BN on running averages.

  10-crop batches (`image` [b, 10, H, W, C]) score each example by the mean of
  its crops' softmax probabilities, as the ResNet paper averages the scores.
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

  return jax.jit(
    eval_step,
    out_shardings=parallel.replicated_sharding(mesh),
    compiler_options=compiler_options,
  )
