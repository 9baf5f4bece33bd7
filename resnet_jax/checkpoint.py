"""Checkpoints of a run: an orbax CheckpointManager in `workdir/checkpoints`, and config.json.

Saves are asynchronous (training continues while the arrays are written) and
atomic (a step directory appears only once complete, so a crash mid-save
leaves the previous checkpoint intact). Kept: the newest `keep` checkpoints
plus the one with the best eval top-1. Each checkpoint has two items: `state`
(any pytree of arrays: step, parameters, BN statistics, optimizer state, RNG)
and `meta` (small JSON: eval metrics, anything else worth reading back).
"""

import json
import math

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from configs import default
from resnet_jax.cli import ConfigError, config_to_json

CONFIG_FILE = 'config.json'


def _top1(metrics) -> float:
  """The ranking metric; checkpoints saved without an eval rank last."""
  return metrics.get('top1', -math.inf) if metrics else -math.inf


class Checkpointer:
  """Save / restore of one run's training state (a thin layer over orbax)."""

  def __init__(self, directory, *, keep: int = 3, async_save: bool = True, read_only=False):
    self.directory = epath.Path(directory).resolve()  # orbax refuses relative paths
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
      [
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(
          get_metric_fn=_top1, n=1, keep_checkpoints_without_metrics=False
        ),
      ]
    )
    options = ocp.CheckpointManagerOptions(
      preservation_policy=policy,
      best_fn=_top1,
      best_mode='max',
      create=not read_only,
      enable_async_checkpointing=async_save,
      read_only=read_only,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, item_names=('state', 'meta'), options=options
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest eval top-1, or None when none was evaluated."""
    scored = [(_top1(self._manager.metrics(s)), s) for s in self.all_steps()]
    scored = [(top1, step) for top1, step in scored if top1 > -math.inf]
    return max(scored)[1] if scored else None

  def save(
    self,
    step: int,
    state,
    *,
    metrics: dict | None = None,
    meta: dict | None = None,
    force: bool = False,
  ) -> bool:
    """Starts an asynchronous save of `state`; `metrics` (eval top1, ...) rank it for `best`."""
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    meta = {'step': int(step), 'metrics': metrics, **(meta or {})}
    return self._manager.save(
      int(step),
      metrics=metrics,
      force=force,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    )

  def restore(self, abstract_state, step: int | None = None):
    """(state, meta) of `step` (default: newest). `abstract_state` gives the
    structure, shapes, dtypes and shardings (jax.ShapeDtypeStruct leaves, or arrays)."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(
        f'no checkpoint at step {step} in {self.directory} (steps: {self.all_steps()})'
      )
    abstract_state = jax.tree.map(_abstract, abstract_state)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
    return restored['state'], restored['meta']

  def wait(self):
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None))


def _flatten(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def load_config(workdir) -> ml_collections.ConfigDict | None:
  """The config a run in `workdir` saved, or None if there is none.

  It is laid over configs/default.py, so that fields added to the codebase
  since the run started read as their defaults instead of failing.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  config = default.get_config()
  _update(config, json.loads(path.read_text()))
  return config


def _update(config: ml_collections.ConfigDict, saved: dict):
  for key, value in saved.items():
    if key not in config:  # a field the codebase no longer has
      continue
    if isinstance(value, dict):
      _update(config[key], value)
    else:
      config[key] = tuple(value) if isinstance(config[key], tuple) else value


def save_config(config: ml_collections.ConfigDict, workdir):
  """Writes workdir/config.json after checking that a previous run there had the same model.

  Resuming a different network from a checkpoint either fails deep inside
  orbax (other shapes) or, worse, silently works (same shapes, other
  shortcut), so a changed `config.model` is refused up front. Other fields
  (e.g. a longer schedule) may change; the file then records the newest.
  """
  workdir = epath.Path(workdir)
  previous = load_config(workdir)
  if previous is not None and 'model' in previous:
    old = _flatten(json.loads(config_to_json(previous.model)))
    new = _flatten(json.loads(config_to_json(config.model)))
    changed = [
      f'model.{k}: {old.get(k)!r} -> {new.get(k)!r}'
      for k in sorted(old.keys() | new.keys())
      if old.get(k) != new.get(k)
    ]
    if changed:
      raise ConfigError(
        f'{workdir} holds a run of a different model ({"; ".join(changed)}); '
        'use another --workdir, or the same model config to resume'
      )
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG_FILE).write_text(config_to_json(config))
