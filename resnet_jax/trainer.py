"""The training loop: TrainState, the jit-compiled train step, train_and_evaluate.

The Flax NNX model is split once into a static graphdef and pure-dict state
(parameters, BN statistics); the step is a pure function of
(TrainState, batch), compiled once with the state donated, replicated over the
mesh while the batch is sharded along `data`. Everything a resumed run needs is
in TrainState: the input position is the step (the data iterator is a pure
function of seed and step), and the step's random key is derived from `rng`
and the step.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from etils import epath
from flax import nnx, struct

from resnet_jax import checkpoint, data, evaluator, metrics, optim, parallel
from resnet_jax.cli import ConfigError
from resnet_jax.models import create_model


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: dict  # nnx.Param values, as a pure nested dict
  batch_stats: dict  # nnx.BatchStat values (BN running averages)
  opt_state: Any
  rng: jax.Array  # uint32 key data of the run's base key


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything derived from the config before the first step."""

  graphdef: nnx.GraphDef
  state: TrainState  # initial, replicated over the mesh
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  info: Any  # data.DatasetInfo
  steps_per_epoch: int
  total_steps: int


def _as_config_error(what: str, fn, *args, **kwargs):
  """Calls fn; a ValueError (a value fn cannot use) becomes a one-line ConfigError."""
  try:
    return fn(*args, **kwargs)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f'{what}: {e}') from e


def setup(config: ml_collections.ConfigDict, mesh) -> Setup:
  """Model, optimizer and initial state from the config (parameters from config.seed)."""
  info = _as_config_error('config.data', data.get_dataset_info, config.data)
  batch_size = config.train.batch_size
  _as_config_error('train.batch_size', parallel.local_batch_size, batch_size, mesh)
  steps_per_epoch = max(info.num_train_examples // batch_size, 1)
  total_steps = optim.total_steps(config.train, steps_per_epoch)
  tx, schedule = optim.create_optimizer(
    config.optim, batch_size=batch_size, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )
  key = jax.random.key(config.seed)
  model = _as_config_error(
    'config.model',
    create_model,
    config.model,
    num_classes=info.num_classes,
    in_channels=info.num_channels,
    rngs=nnx.Rngs(params=jax.random.fold_in(key, 0)),
  )
  model.train()
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=jax.random.key_data(jax.random.fold_in(key, 1)),
  )
  return Setup(
    graphdef, parallel.replicate(state, mesh), tx, schedule, info, steps_per_epoch, total_steps
  )


def make_train_step(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh,
  *,
  label_smoothing: float = 0.0,
):
  """jit(state, batch) -> (state, metrics); the input state's buffers are donated."""

  def train_step(state: TrainState, batch):
    def loss_fn(params):
      model = nnx.merge(graphdef, params, state.batch_stats)
      logits = model(batch['image'])
      loss = jnp.mean(metrics.cross_entropy(logits, batch['label'], label_smoothing))
      return loss, (logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    step_metrics = {
      'loss': loss,
      'top1': jnp.mean(metrics.correct_topk(logits, batch['label'], 1)),
      'grad_norm': optax.tree.norm(grads),
      'learning_rate': schedule(state.step),
    }
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, step_metrics

  replicated = parallel.replicated_sharding(mesh)
  return jax.jit(
    train_step,
    in_shardings=(replicated, parallel.batch_sharding(mesh)),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def _is_due(step: int, every: int, last: int) -> bool:
  return step == last or (every > 0 and step % every == 0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the final eval metrics."""
  workdir = epath.Path(workdir)
  mesh = parallel.create_mesh()
  setup_ = setup(config, mesh)
  checkpoint.save_config(config, workdir)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', keep=config.train.keep_checkpoints)
  state = setup_.state
  if ckpt.latest_step() is not None:
    state, _ = ckpt.restore(state)
    _print(f'resumed from {ckpt.directory} at step {int(state.step)}')
  start, total = int(state.step), setup_.total_steps

  train_step = make_train_step(
    setup_.graphdef, setup_.tx, setup_.schedule, mesh, label_smoothing=config.optim.label_smoothing
  )
  eval_step = evaluator.make_eval_step(setup_.graphdef, mesh)
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  progress = metrics.Progress(total, config.train.batch_size)
  train_iter = data.create_train_iterator(
    config.data,
    global_batch_size=config.train.batch_size,
    seed=config.seed,
    start_step=start,
    dtype=config.model.dtype,  # bfloat16 inputs halve the host-to-device traffic
  )
  _print(
    f'training {total} steps ({setup_.steps_per_epoch} per epoch) on {mesh.devices.size} '
    f'device(s), from step {start}'
  )
  pending, eval_result = [], None
  for step in range(start + 1, total + 1):
    state, step_metrics = train_step(state, parallel.shard_batch(next(train_iter), mesh))
    pending.append(step_metrics)
    if step == start + 1:  # Rates count from here: the first step includes compilation.
      progress.mark(jax.block_until_ready(state.step).item())
    if _is_due(step, config.train.log_every, total):
      scalars = _mean(pending)
      pending = []
      rates = progress.mark(step)
      scalars.update({k: v for k, v in rates.items() if k != 'steps_per_sec'})
      writer.write(step, 'train', scalars)
      _print(progress.line(step, scalars, rates))
    evaluated = _is_due(step, config.train.eval_every, total)
    if evaluated:
      eval_result = evaluator.evaluate_split(
        eval_step, state.params, state.batch_stats, config, mesh
      )
      writer.write(step, 'eval', eval_result)
      _print(
        f'eval at step {step}: loss {eval_result["loss"]:.4f}, '
        f'top1 {100 * eval_result["top1"]:.2f}%, top5 {100 * eval_result["top5"]:.2f}% '
        f'({eval_result["num_examples"]} examples)'
      )
    if _is_due(step, config.train.checkpoint_every, total):
      ckpt.save(step, state, metrics=eval_result if evaluated else None)
    if evaluated:
      progress.mark(step)  # Throughput counts training only, not the eval.
  if eval_result is None:  # Resumed a finished run: report its final state.
    eval_result = evaluator.evaluate_split(eval_step, state.params, state.batch_stats, config, mesh)
  ckpt.wait()
  ckpt.close()
  writer.close()
  return eval_result


def _mean(step_metrics: list[dict]) -> dict:
  """Means over the steps since the last log (learning rate: the latest value)."""
  host = jax.device_get(step_metrics)
  out = {k: sum(float(m[k]) for m in host) / len(host) for k in host[0]}
  out['learning_rate'] = float(host[-1]['learning_rate'])
  return out


def _print(line: str):
  if jax.process_index() == 0:
    print(line, flush=True)
