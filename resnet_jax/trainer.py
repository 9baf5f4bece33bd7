"""The training loop: train_and_evaluate.

It starts from `experiment.setup` (the config checked, the dataset's info, the initial
state) and runs the steps of `train_state` with the input pipeline, adding what goes
around them: logging, periodic evals, checkpoints, preemption, non-finite losses.
"""

import jax
import ml_collections
import numpy as np
from etils import epath

from resnet_jax import (
  checkpoint,
  evaluator,
  experiment,
  inputs,
  metrics,
  parallel,
  preemption,
  train_state,
)
from resnet_jax.errors import RunError


def _is_due(step: int, every: int, last: int) -> bool:
  return step == last or (every > 0 and step % every == 0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict | None:
  """Trains (or resumes) the run in `workdir`; returns the final eval metrics, or None
  when a SIGTERM/SIGINT (preemption) stopped it after saving a checkpoint. Those
  signals are watched from the start: one during set-up stops after the first step.
  A file that cannot be written (a full disk) ends the run with a RunError."""
  with preemption.PreemptionWatch() as watch:
    try:
      return _train_and_evaluate(config, workdir, watch)
    except OSError as e:
      raise RunError(
        f'{e.strerror or e}: {e.filename}; the checkpoints in {workdir} are intact: '
        'fix that and rerun the same command'
      ) from e


def _train_and_evaluate(config, workdir, watch: preemption.PreemptionWatch) -> dict | None:
  workdir = epath.Path(workdir)
  mesh = parallel.create_mesh()
  # A resumed run's weights are in its checkpoint: the pretrained file may be gone.
  resuming = checkpoint.has_checkpoint(workdir / 'checkpoints')
  prepared = experiment.setup(config, mesh, pretrained_weights=not resuming)
  checkpoint.save_config(config, workdir)
  checkpoint.check_free_space(workdir, prepared.state)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', keep=config.train.keep_checkpoints)
  state = prepared.state
  if ckpt.latest_step() is not None:
    state, _ = experiment.restore_checkpoint(ckpt, state, config)
    _print(f'resumed from {ckpt.directory} at step {int(state.step)}')
  elif resuming:  # Opening set aside every step (unreadable): start over, weights included.
    state = experiment.setup(config, mesh).state
  start, total = int(state.step), prepared.total_steps

  train_inputs = inputs.train_inputs(config, mesh, start_step=start)
  train_step = train_state.train_step(config, prepared, mesh, train_inputs.batch_from)
  eval_step = train_state.eval_step(config, prepared, mesh)
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  progress = metrics.Progress(total, config.train.batch_size * config.train.num_seeds)
  _print(
    f'training {total} steps ({prepared.steps_per_epoch} per epoch) on {mesh.devices.size} '
    f'device(s), from step {start}'
  )
  pending, unchecked, eval_result, stop = [], [], None, False
  for step in range(start + 1, total + 1):
    state, step_metrics = train_step(state, next(train_inputs.stream))
    if unchecked:
      # At most this step and the one before in flight: left alone, the host runs up to
      # `log_every` steps ahead of the device, and a notice stops the run only once those
      # are computed (over 50 s of plain-56 steps on 2 CPU cores, past a 30-second grace).
      jax.block_until_ready(unchecked[-1][1])
    pending.append(step_metrics)
    unchecked.append((step, step_metrics))
    if step == start + 1:  # Rates count from here: the first step includes compilation.
      progress.mark(jax.block_until_ready(state.step).item())
    stop = watch.reached(step)
    logged = _is_due(step, config.train.log_every, total)
    evaluated = _is_due(step, config.train.eval_every, total) and not stop
    saved = _is_due(step, config.train.checkpoint_every, total) or stop
    if logged or evaluated or saved:  # The host waits for the step here anyway.
      _check_finite(unchecked, config.train.on_nonfinite, ckpt)
      unchecked = []
    if logged:
      scalars = _mean(pending, train_state.seeds(config))
      pending = []
      rates = progress.mark(step)
      scalars.update({k: v for k, v in rates.items() if k != 'steps_per_sec'})
      writer.write(step, 'train', scalars)
      _print(progress.line(step, scalars, rates))
    if evaluated:
      eval_result = evaluator.evaluate_state(eval_step, state, config, mesh)
      writer.write(step, 'eval', eval_result)
      _print(f'eval at step {step}: {_eval_line(eval_result)}')
    if saved:
      ckpt.save(
        step,
        experiment.checkpoint_layout(state, config),
        metrics=eval_result if evaluated else None,
        force=stop,
      )
    if evaluated:
      progress.mark(step)  # Throughput counts training only, not the eval.
    if stop:
      break
  ckpt.wait()
  if stop:
    _print(
      f'{watch.describe()}: stopped after step {step} with its checkpoint in '
      f'{ckpt.directory}; the same command resumes the run'
    )
    eval_result = None
  elif eval_result is None:  # Resumed a finished run: report its final state.
    eval_result = evaluator.evaluate_state(eval_step, state, config, mesh)
  ckpt.close()
  writer.close()
  return eval_result


def _check_finite(unchecked: list[tuple[int, dict]], on_nonfinite: str, ckpt):
  """Stops the run at the first step whose loss or gradient was not finite, before
  anything of it is saved; with on_nonfinite='skip' (those updates were not applied)
  only says which steps."""
  flags = jax.device_get([step_metrics['nonfinite'] for _, step_metrics in unchecked])
  bad = [step for (step, _), flag in zip(unchecked, flags, strict=True) if np.any(flag)]
  if not bad:
    return
  if on_nonfinite == 'skip':
    _print(f'non-finite loss or gradient at step(s) {", ".join(map(str, bad))}: update skipped')
    return
  ckpt.wait()
  good = ckpt.latest_step()
  last = f'step {good} in {ckpt.directory}' if good is not None else 'none yet'
  raise RunError(
    f'non-finite loss or gradient at step {bad[0]}; last good checkpoint: {last}. '
    'Lower optim.learning_rate (or clip: optim.grad_clip_norm), or set '
    'train.on_nonfinite=skip to skip such updates'
  )


def _eval_line(result: dict) -> str:
  """`loss 0.3012, top1 90.41%, top5 99.80% (10000 examples)`, and the same of the EMA."""
  line = (
    f'loss {result["loss"]:.4f}, top1 {100 * result["top1"]:.2f}%, '
    f'top5 {100 * result["top5"]:.2f}% ({result["num_examples"]} examples)'
  )
  if 'top1_std' in result:  # Several seeds: the line has their means.
    line += f', top1 std {100 * result["top1_std"]:.2f} over the seeds'
  if 'ema_top1' in result:
    line += (
      f'; EMA: loss {result["ema_loss"]:.4f}, top1 {100 * result["ema_top1"]:.2f}%, '
      f'top5 {100 * result["ema_top5"]:.2f}%'
    )
  return line


def _mean(step_metrics: list[dict], seeds: list[int]) -> dict:
  """Means over the steps since the last log (learning rate: the latest value); of each
  seed and over the seeds (metrics.by_seed) where the run trains several."""
  host = jax.device_get(step_metrics)
  means = {k: np.mean([m[k] for m in host], axis=0) for k in host[0] if k != 'learning_rate'}
  out = metrics.by_seed(means, seeds) if len(seeds) > 1 else {k: float(v) for k, v in means.items()}
  out['learning_rate'] = float(np.ravel(host[-1]['learning_rate'])[0])  # the seeds share it
  return out


def _print(line: str):
  if jax.process_index() == 0:
    print(line, flush=True)
