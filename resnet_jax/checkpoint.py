"""Checkpoints of a run: an orbax CheckpointManager in `workdir/checkpoints`, and config.json.

Saves are asynchronous (training continues while the arrays are written) and
atomic (orbax writes `<step>.orbax-checkpoint-tmp` and renames it when
complete, so a crash mid-save leaves the previous checkpoint intact; the
leftover is removed at the next start). Kept: the newest `keep` checkpoints
plus the one with the best eval top-1; older ones go only after a newer one is
complete, and a failed save (a full disk) is a `RunError` naming the last good
step. Each checkpoint has two items: `state` (any pytree of arrays: step,
parameters, BN statistics, optimizer state, RNG) and `meta` (small JSON: eval
metrics, anything else worth reading back).

A checkpoint that is complete on disk can still be damaged (files truncated by
a crash before the OS flushed them, or by an interrupted copy): `restore` then
falls back to the newest one that reads back, and sets the damaged ones aside
as `<step>.unreadable` (renamed, never deleted or overwritten).
"""

import contextlib
import itertools
import json
import math
import shutil

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from resnet_jax import defaults
from resnet_jax.errors import ConfigError, RunError
from resnet_jax.models import EXECUTION_FIELDS

CONFIG_FILE = 'config.json'
ITEMS = ('state', 'meta')


def _top1(metrics) -> float:
  """The ranking metric: eval top-1 of the weights or of their EMA, the better; checkpoints
  saved without an eval rank last."""
  metrics = metrics or {}
  return max(metrics.get('top1', -math.inf), metrics.get('ema_top1', -math.inf))


class Checkpointer:
  """Save / restore of one run's training state (a thin layer over orbax)."""

  def __init__(self, directory, *, keep: int = 3, async_save: bool = True, read_only=False):
    self.directory = epath.Path(directory).resolve()  # orbax refuses relative paths
    self._read_only = read_only
    self._pending = None  # The step of a save that may still be in flight.
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
      [
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(
          get_metric_fn=_top1, n=1, keep_checkpoints_without_metrics=False
        ),
      ]
    )
    # Not orbax's own read_only mode, which only adds two warnings to each open: read-only
    # here means creating, cleaning up and setting aside nothing (and evaluate.py never saves).
    options = ocp.CheckpointManagerOptions(
      preservation_policy=policy,
      best_fn=_top1,
      best_mode='max',
      create=not read_only,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,  # What a process killed mid-save left.
    )
    try:
      self._manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)
    except Exception as e:  # noqa: BLE001 (a damaged metrics file of some step fails this)
      unreadable = self._unreadable_metrics()
      if read_only or not unreadable:
        raise RunError(f'cannot read the checkpoints in {self.directory}: {_summary(e)}') from e
      self._set_aside(unreadable, 'setting it aside')
      self._manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest eval top-1 (of its weights or their EMA), or None when none
    was evaluated."""
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
    self.wait()  # orbax waits for the previous save anyway; this names it if it failed.
    with self._save_failure(step):
      saved = self._manager.save(
        int(step),
        metrics=metrics,
        force=force,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      )
    self._pending = int(step)
    return saved

  def require(self, step: int | None = None):
    """A ConfigError unless `step` (by default: any step) is saved here."""
    if step is None and not self.all_steps():
      raise ConfigError(f'no checkpoint in {self.directory} yet')
    if step is not None and step not in self.all_steps():
      raise ConfigError(
        f'no checkpoint at step {step} in {self.directory} (steps: {self.all_steps()})'
      )

  def restore(self, abstract_state, step: int | None = None):
    """(state, meta) of `step`, or by default of the newest checkpoint that reads back.

    `abstract_state` gives the structure, shapes, dtypes and shardings
    (jax.ShapeDtypeStruct leaves, or arrays). Newer checkpoints that do not read
    back are passed over with a warning, and set aside unless read-only. When
    none reads back, nothing is set aside: that is a checkpoint of another
    structure (another model or code version), not damage.
    """
    self.require(step)
    abstract_state = jax.tree.map(_abstract, abstract_state)
    if step is not None:
      try:
        return self._restore(step, abstract_state)
      except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
        raise RunError(
          f'checkpoint {step} in {self.directory} does not read back: {_summary(e)}'
        ) from e
    unreadable = {}
    for newest in reversed(self.all_steps()):
      try:
        restored = self._restore(newest, abstract_state)
      except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
        unreadable[newest] = e
        continue
      if jax.process_count() > 1:
        multihost_utils.assert_equal(newest, 'processes restored different checkpoints')
      if unreadable:
        self._set_aside(unreadable, f'falling back to step {newest}')
        self._manager.reload()
      return restored
    step, error = next(iter(unreadable.items()))
    raise RunError(
      f'no checkpoint in {self.directory} reads back into this model (step {step}: '
      f'{_summary(error)}); use another --workdir, or move the checkpoints away to start over'
    ) from error

  def _restore(self, step: int, abstract_state):
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
    return restored['state'], restored['meta']

  def _unreadable_metrics(self) -> dict:
    """{step: error} of the steps whose metrics file does not load."""
    probe = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(read_only=True, lightweight_initialize=True),
    )
    unreadable = {}
    for step in probe.all_steps():
      try:
        probe.metrics(step)
      except Exception as e:  # noqa: BLE001
        unreadable[step] = e
    probe.close()
    return unreadable

  def _set_aside(self, unreadable: dict, action: str):
    """Warns about each damaged step and, unless read-only, renames it <step>.unreadable."""
    for step, error in unreadable.items():
      logging.warning(
        'checkpoint %d in %s does not read back (%s); %s',
        *(step, self.directory, _summary(error), action),
      )
    if self._read_only:
      return
    if jax.process_index() == 0:
      for step in unreadable:
        _rename_aside(self.directory / str(step))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('checkpoint: unreadable steps set aside')

  def wait(self):
    """Blocks until pending asynchronous saves are on disk."""
    with self._save_failure(self._pending):
      self._manager.wait_until_finished()
    self._pending = None

  @contextlib.contextmanager
  def _save_failure(self, step):
    """A failed save (e.g. a full disk) as a RunError; orbax never renamed it into place."""
    try:
      yield
    except Exception as e:  # noqa: BLE001 (tensorstore and the filesystem raise many kinds)
      self._pending = None
      self._manager.reload()
      good = self._manager.latest_step()
      kept = (
        'no earlier checkpoint' if good is None else f'the last good one, step {good}, is intact'
      )
      raise RunError(
        f'saving the checkpoint of step {step} in {self.directory} failed ({_summary(e)}); '
        f'{kept}: fix that and rerun the same command'
      ) from e

  def close(self):
    self._manager.close()


def _summary(error: Exception) -> str:
  """One short line of an error from deep inside orbax or tensorstore: their messages
  start with the kind (RESOURCE_EXHAUSTED) and end with the cause (No space left on device)."""
  line = (str(error).strip().splitlines() or [''])[0]
  if len(line) > 200:
    line = f'{line[:60]} ... {line[-130:]}'
  return f'{type(error).__name__}: {line}'


def _rename_aside(path: epath.Path):
  """Renames `path` to the first free `<name>.unreadable[-N]` beside it."""
  for n in itertools.count(1):
    target = path.with_name(f'{path.name}.unreadable' + (f'-{n}' if n > 1 else ''))
    if not target.exists():
      path.rename(target)
      return


def has_checkpoint(directory) -> bool:
  """Whether `directory` holds a checkpoint step, looked up without opening orbax: orbax
  names a finished step by its number, a save in progress or a step set aside carries a
  suffix."""
  directory = epath.Path(directory)
  return directory.is_dir() and any(path.name.isdigit() for path in directory.iterdir())


def check_free_space(directory, state):
  """A ConfigError before training when the disk cannot hold even one checkpoint of `state`."""
  need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  path = epath.Path(directory)
  while not path.exists():
    path = path.parent
  free = shutil.disk_usage(path).free
  if free < need:
    raise ConfigError(
      f'{directory} has {free / 2**20:.1f} MiB free, less than one checkpoint '
      f'({need / 2**20:.1f} MiB): free some space or use another --workdir'
    )


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

  It is laid over the defaults (`defaults.from_json`), so that fields added to the
  codebase since the run started read as their defaults instead of failing.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  return defaults.from_json(path.read_text())


def save_config(config: ml_collections.ConfigDict, workdir):
  """Writes workdir/config.json after checking that a previous run there had the same model.

  Resuming a different network from a checkpoint either fails deep inside
  orbax (other shapes) or, worse, silently works (same shapes, other
  shortcut), so a changed `config.model` is refused up front, except for the
  fields that only choose how it is computed (dtype, scan, remat, ...). Other
  fields (e.g. a longer schedule) may change; the file then records the newest.
  """
  workdir = epath.Path(workdir)
  previous = load_config(workdir)
  if previous is not None and 'model' in previous:
    old = _flatten(json.loads(defaults.to_json(previous.model)))
    new = _flatten(json.loads(defaults.to_json(config.model)))
    changed = [
      f'model.{k}: {old.get(k)!r} -> {new.get(k)!r}'
      for k in sorted(old.keys() | new.keys())
      if old.get(k) != new.get(k) and k not in EXECUTION_FIELDS
    ]
    if changed:
      raise ConfigError(
        f'{workdir} holds a run of a different model ({"; ".join(changed)}); '
        'use another --workdir, or the same model config to resume'
      )
  if jax.process_index() == 0:
    try:
      workdir.mkdir(parents=True, exist_ok=True)
      temporary = workdir / f'{CONFIG_FILE}.tmp'
      temporary.write_text(defaults.to_json(config))
      temporary.replace(workdir / CONFIG_FILE)  # Never a half-written config.json.
    except OSError as e:
      raise ConfigError(
        f'cannot write to --workdir={workdir} ({e.strerror or e}): use a writable directory'
      ) from e
