"""Evaluation: loss, top-1 and top-5 over a whole split, center crop or 10-crop.

Used by the training loop every `train.eval_every` steps and by evaluate.py,
which restores a checkpoint first (`evaluate`). The step itself is
`train_state.eval_step`.
"""

import json
import re

import jax
import ml_collections
from etils import epath

from resnet_jax import checkpoint, experiment, inputs, metrics, parallel, train_state
from resnet_jax.errors import ConfigError


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
  return config.train.eval_batch_size or config.train.batch_size


def evaluate_split(
  eval_step,
  params,
  batch_stats,
  config: ml_collections.ConfigDict,
  mesh,
  *,
  split: str | None = None,
  crops: int = 1,
) -> dict:
  """{'loss', 'top1', 'top5', 'num_examples'} over every example of the split (default eval);
  of a run of several seeds (train.num_seeds), their means, with metrics.by_seed's
  '<name>_std' and 'seed<s>/<name>' beside them."""
  accumulator = metrics.EvalAccumulator()
  batches = inputs.eval_batches(
    config, mesh, batch_size=eval_batch_size(config), split=split, crops=crops
  )
  for batch in batches:
    accumulator.add(eval_step(params, batch_stats, batch))
  result = accumulator.result()
  if config.train.num_seeds == 1:
    return result
  examples = result.pop('num_examples')
  return {**metrics.by_seed(result, train_state.seeds(config)), 'num_examples': examples}


def evaluate_state(eval_step, state, config: ml_collections.ConfigDict, mesh) -> dict:
  """`evaluate_split` of the state's weights on the eval split, and of their moving average
  where the run keeps one (the same metrics, named ema_loss, ema_top1, ema_top5)."""
  result = evaluate_split(eval_step, state.params, state.batch_stats, config, mesh)
  if state.ema:
    ema = evaluate_split(eval_step, state.ema['params'], state.ema['batch_stats'], config, mesh)
    result.update({f'ema_{k}': v for k, v in ema.items() if k != 'num_examples'})
  return result


def resolve_checkpoint(path) -> tuple[epath.Path, epath.Path, int | None]:
  """(workdir, checkpoints dir, step or None) from a workdir, its checkpoints dir or a step dir."""
  path = epath.Path(path)
  if (path / 'checkpoints').is_dir():
    return path, path / 'checkpoints', None
  if path.name.isdigit() and path.parent.name == 'checkpoints':
    return path.parent.parent, path.parent, int(path.name)
  if path.name == 'checkpoints':
    return path.parent, path, None
  raise ConfigError(f'no checkpoints under {path}: pass a run directory or a checkpoint step')


def evaluate(
  config: ml_collections.ConfigDict | None,
  path,
  *,
  step: int | None = None,
  best: bool = False,
  split: str | None = None,
  crops: int = 1,
  ema: bool = False,
  eval_image_size: int = 0,
  eval_resize: int = 0,
) -> dict:
  """Restores a checkpoint of the run at `path` and evaluates it.

  `path`: a workdir, its checkpoints dir, or one step dir. `config`: None to use
  the run's config.json. Default step: the newest; `best`: the best by eval
  top-1. `ema`: the moving average of the weights (runs with optim.ema_decay).
  `eval_image_size`, `eval_resize`: the resolution and the shorter side before the
  center crop, where not the config's (data.eval_image_size, data.eval_resize).
  Writes workdir/eval/<split>_<step>[_10crop][_ema][_<size>px][_resize<r>].json and
  returns {'top1', 'top5', 'loss', 'num_examples', 'step', 'split', 'crops', 'ema',
  'image_size', 'resize'} (resize 0: the default, the size x 256/224).
  """
  workdir, directory, path_step = resolve_checkpoint(path)
  config = config or checkpoint.load_config(workdir)
  if config is None:
    raise ConfigError(f'no config.json in {workdir}: pass --config')
  config = _with_eval_settings(config, eval_image_size, eval_resize)
  if ema and not config.optim.ema_decay:
    raise ConfigError(f'the run in {workdir} kept no EMA weights (optim.ema_decay=0): drop --ema')
  ckpt = checkpoint.Checkpointer(directory, read_only=True)
  if best:
    step = ckpt.best_step()
    if step is None:
      raise ConfigError(f'no evaluated checkpoint in {directory} to call the best')
  step = step if step is not None else path_step
  ckpt.require(step)  # before set-up reads the dataset's description
  mesh = parallel.create_mesh()
  setup = experiment.setup(config, mesh, pretrained_weights=False)  # the checkpoint has them
  state, _ = experiment.restore_checkpoint(ckpt, setup.state, config, step)
  ckpt.close()
  eval_step = train_state.eval_step(config, setup, mesh)
  split = split or config.data.eval_split
  weights = state.ema if ema else {'params': state.params, 'batch_stats': state.batch_stats}
  result = evaluate_split(
    eval_step, weights['params'], weights['batch_stats'], config, mesh, split=split, crops=crops
  )
  result.update(step=int(state.step), split=split, crops=crops, ema=ema, **_settings(config))
  if jax.process_index() == 0:
    out = workdir / 'eval'
    out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_', split).strip('_')
    suffix = '_10crop' if crops == 10 else ''
    suffix += '_ema' if ema else ''
    suffix += f'_{eval_image_size}px' if eval_image_size else ''
    suffix += f'_resize{eval_resize}' if eval_resize else ''
    (out / f'{name}_{result["step"]}{suffix}.json').write_text(json.dumps(result, indent=2) + '\n')
  return result


def evaluate_weights_file(
  config: ml_collections.ConfigDict,
  *,
  split: str | None = None,
  crops: int = 1,
  eval_image_size: int = 0,
  eval_resize: int = 0,
) -> dict:
  """Evaluates the weight file config.pretrained.weights as it is, classifier included (the
  file's classes must be the dataset's): imported torchvision or timm weights at their
  published settings, e.g. torchvision's V2 ResNet-50 at eval_resize=232. Nothing is
  written; returns evaluate()'s keys with 'weights' for 'step' and 'ema'."""
  if not config.pretrained.weights:
    raise ConfigError('no weight file to evaluate: pass --weights=FILE')
  config = _with_eval_settings(config, eval_image_size, eval_resize)
  config.pretrained.load_head = True
  mesh = parallel.create_mesh()
  setup = experiment.setup(config, mesh)
  eval_step = train_state.eval_step(config, setup, mesh)
  split = split or config.data.eval_split
  state = setup.state
  result = evaluate_split(
    eval_step, state.params, state.batch_stats, config, mesh, split=split, crops=crops
  )
  result.update(weights=config.pretrained.weights, split=split, crops=crops, **_settings(config))
  return result


def _with_eval_settings(config, eval_image_size: int, eval_resize: int):
  """A copy of `config` evaluating at `eval_image_size` after resizing to `eval_resize`
  where those are not 0."""
  config = ml_collections.ConfigDict(config)
  config.data.eval_image_size = eval_image_size or config.data.eval_image_size
  config.data.eval_resize = eval_resize or config.data.eval_resize
  return config


def _settings(config) -> dict:
  """The evaluation's resolution, and its resize (0: the default, the size x 256/224)."""
  data_config = config.data
  return {
    'image_size': data_config.eval_image_size or data_config.image_size,
    'resize': data_config.eval_resize,
  }
