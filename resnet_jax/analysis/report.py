"""What a sweep's runs produced, as a markdown table: errors, size, cost, wall time.

The errors and curves come from each run's metrics.jsonl (see ERRORS_NOTE); the
curves are those records against the step, as in He et al. 2015's Figures 4 and 6.
"""

import dataclasses
import itertools
import os
import platform
import statistics

import jax
from etils import epath
from flax import nnx

from resnet_jax import checkpoint, metrics, train_state
from resnet_jax.analysis import run_record
from resnet_jax.data import original_files
from resnet_jax.models.resnet import create_model
from resnet_jax.models.summary import count_params, summarize

# The table's training error averages the logged running errors over this final part of
# the steps: one logged window (`train.log_every` steps, the last often shorter) is a few
# thousand images, too few to rank networks whose errors differ by a point.
FINAL_FRACTION = 0.1
ERRORS_NOTE = (
  'Training error: the running top-1 error logged in metrics.jsonl (training mode: '
  'augmented images, BN on batch statistics, weights changing), averaged over the last '
  f'{FINAL_FRACTION:.0%} of the steps, each logged window weighted by its steps. Test error: '
  'the last evaluation of the eval split (at the final step).'
)
# The window table splits the steps into this many spans, one training error each (fewer
# where the runs logged fewer windows: a span then would only repeat its window's error).
WINDOWS = 10
# The grid key whose points are repeats of one experiment: the spread table pools them.
SEED_KEY = 'seed'


@dataclasses.dataclass
class RunResult:
  """One point of the sweep, finished or not."""

  name: str
  overrides: dict[str, str]
  done: bool
  train_curve: list[tuple[int, float]]  # (step, training error in %)
  test_curve: list[tuple[int, float]]  # (step, test error in %)
  ema_test_curve: list[tuple[int, float]] = ()  # the same of the weights' EMA (optim.ema_decay)
  wall_seconds: float | None = None
  params: int | None = None
  macs: int | None = None

  def mean_train_error(self, start: float, end: float) -> float | None:
    """The training error over steps (start, end], each logged window weighted by its steps.

    None for an empty span, or unless the logged windows cover all of (start, end].
    """
    if end <= start or not self.train_curve or self.train_curve[-1][0] < end:
      return None
    weighted, steps, previous = 0.0, 0.0, 0
    for step, error in self.train_curve:  # each logs the window (previous, step]
      overlap = min(step, end) - max(previous, start)
      if overlap > 0:
        weighted, steps = weighted + overlap * error, steps + overlap
      previous = step
    return weighted / steps

  @property
  def train_error(self) -> float | None:
    """The mean of the training error over the last FINAL_FRACTION of the steps."""
    if not self.train_curve:
      return None
    last = self.train_curve[-1][0]
    return self.mean_train_error(last * (1 - FINAL_FRACTION), last)

  @property
  def test_error(self) -> float | None:
    return self.test_curve[-1][1] if self.test_curve else None

  @property
  def ema_test_error(self) -> float | None:
    return self.ema_test_curve[-1][1] if self.ema_test_curve else None

  @property
  def steps(self) -> int:
    return max((step for step, _ in self.train_curve + self.test_curve), default=0)


def error_curve(workdir, split: str, top1: str = 'top1') -> list[tuple[int, float]]:
  """(step, 100 - top-1 %) of one split; a step logged twice (a resumed run) keeps its last.
  Training steps on mixed batches (mixup/CutMix) log no top-1: their curve is empty."""
  records = metrics.read_metrics(workdir, split)
  by_step = {r['step']: 100 * (1 - r[top1]) for r in records if top1 in r}
  return sorted(by_step.items())


def model_size(config) -> tuple[int, int]:
  """(parameters, multiply-adds per image) of the run's network, without allocating it."""
  if config.data.original_dir:  # Known by the dataset's name: no file read, no TFDS.
    num_classes, channels = original_files.classes_and_channels(config.data.dataset)
  else:
    from resnet_jax import data  # Here: TensorFlow loads only when a report is made.

    info = data.get_dataset_info(config.data)
    num_classes, channels = info.num_classes, info.num_channels
  model = nnx.eval_shape(
    lambda: create_model(
      config.model, num_classes=num_classes, in_channels=channels, rngs=nnx.Rngs(0)
    )
  )
  size = config.data.image_size
  macs = sum(row.macs for row in summarize(model, (size, size, channels)))
  return count_params(model), macs


# What load_runs reads in a run's workdir: all a report needs of the run.
RUN_FILES = (checkpoint.CONFIG_FILE, metrics.METRICS_FILE, run_record.FILENAME)


def load_runs(workdir, name: str, overrides: dict[str, str]) -> list[RunResult]:
  """The run in `workdir`, or each of its seeds (`seed` added to their overrides) where it
  trained several at once (train.num_seeds; the run's wall time goes with its first seed)."""
  workdir = epath.Path(workdir)
  record = run_record.read(workdir)
  config = checkpoint.load_config(workdir) if workdir.exists() else None
  size = model_size(config) if config is not None else (None, None)
  seeds = train_state.seeds(config) if config is not None else []
  if len(seeds) <= 1:
    prefixes = {'': (name, overrides)}
  else:
    prefixes = {f'seed{s}/': (f'{name}/seed{s}', {**overrides, SEED_KEY: str(s)}) for s in seeds}
  results = []
  for prefix, (run_name, run_overrides) in prefixes.items():
    results.append(
      RunResult(
        name=run_name,
        overrides=run_overrides,
        done=record.get('status') == 'done',
        train_curve=error_curve(workdir, 'train', f'{prefix}top1'),
        test_curve=error_curve(workdir, 'eval', f'{prefix}top1'),
        ema_test_curve=error_curve(workdir, 'eval', f'ema_{prefix}top1'),
        wall_seconds=None if results else record.get('wall_seconds'),
        params=size[0],
        macs=size[1],
      )
    )
  return results


def _row(cells: list[str]) -> str:
  return '| ' + ' | '.join(cells) + ' |'


def _number(value: float | None, fmt: str) -> str:
  return '-' if value is None else format(value, fmt)


def markdown_table(results: list[RunResult]) -> str:
  """One row per run: its grid values, errors, size, cost and wall time."""
  keys = list(results[0].overrides) if results else []
  ema = any(r.ema_test_curve for r in results)  # a column only where a run kept an EMA
  header = [*keys, 'train error %', 'test error %', *(['EMA test error %'] * ema)]
  header += ['params', 'multiply-adds', 'steps', 'wall time']
  lines = [_row(header), '|' + '---|' * len(header)]
  for r in results:
    wall = '-' if r.wall_seconds is None else metrics.format_duration(r.wall_seconds)
    unfinished = '' if r.done else ' (not finished)' if r.steps else ''
    cells = [
      *(r.overrides[k] for k in keys),
      _number(r.train_error, '.2f'),
      _number(r.test_error, '.2f') + unfinished,
      *([_number(r.ema_test_error, '.2f') + unfinished] * ema),
      _number(r.params, ','),
      _number(r.macs, ','),
      str(r.steps),
      wall,
    ]
    lines.append(_row(cells))
  return '\n'.join(lines)


def shared_settings(results: list[RunResult]) -> dict[str, str]:
  """The grid values every run has (a grid axis of one value): said once (the plot's title,
  the first table) rather than for every run."""
  first = results[0].overrides if results else {}
  return {k: v for k, v in first.items() if all(r.overrides.get(k) == v for r in results)}


def window_spans(results: list[RunResult], windows: int = WINDOWS) -> list[tuple[int, int]]:
  """`windows` equal spans of the longest run's steps, or as many as the most finely logged
  run has logged windows, if fewer."""
  steps = max((r.steps for r in results), default=0)
  count = min(windows, max((len(r.train_curve) for r in results), default=0)) or windows
  edges = (round(steps * i / count) for i in range(count + 1))
  return [(a, b) for a, b in itertools.pairwise(edges) if a < b]  # fewer if steps < count


def window_table(results: list[RunResult], windows: int = WINDOWS) -> str:
  """Each run's training error in each span of `window_spans`.

  Where the grid asks whether one network passes another (He et al. 2015's Figure 6), this
  says in which span it does, without reading the curves; a span a run has not finished is '-'.
  The grid values all runs share are left out (the first table has them).
  """
  spans = window_spans(results, windows)
  shared = shared_settings(results)
  keys = [k for k in results[0].overrides if k not in shared] if len(results) > 1 else list(shared)
  header = [*keys, *(f'{a}-{b}' for a, b in spans)]
  lines = [_row(header), '|' + '---|' * len(header)]
  for r in results:
    errors = (r.mean_train_error(a, b) for a, b in spans)
    cells = [*(r.overrides[k] for k in keys), *(_number(e, '.2f') for e in errors)]
    lines.append(_row(cells))
  return '\n'.join(lines)


def seed_groups(results: list[RunResult]) -> list[list[RunResult]]:
  """The runs grouped by their grid values other than SEED_KEY, in the grid's order."""
  groups = {}
  for r in results:
    key = tuple((k, v) for k, v in r.overrides.items() if k != SEED_KEY)
    groups.setdefault(key, []).append(r)
  return list(groups.values())


def mean_std(values: list[float]) -> str:
  """'mean ± std (n)', the std the sample's (n - 1); one value is 'value (1)'."""
  if not values:
    return '-'
  if len(values) == 1:
    return f'{values[0]:.2f} (1)'
  return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})'


def spread_table(results: list[RunResult]) -> str | None:
  """One row per group of `seed_groups`: each error's mean ± std over the group's finished
  runs; None where no group has two runs."""
  groups = seed_groups(results)
  if all(len(g) < 2 for g in groups):
    return None
  keys = [k for k in results[0].overrides if k != SEED_KEY]
  ema = any(r.ema_test_curve for r in results)
  errors = {'train error %': 'train_error', 'test error %': 'test_error'}
  if ema:
    errors['EMA test error %'] = 'ema_test_error'
  header = [*keys, 'runs', *errors]
  lines = [_row(header), '|' + '---|' * len(header)]
  for group in groups:
    done = [r for r in group if r.done]
    cells = [*(group[0].overrides[k] for k in keys), f'{len(done)} of {len(group)} done']
    for attribute in errors.values():
      cells.append(mean_std([v for r in done if (v := getattr(r, attribute)) is not None]))
    lines.append(_row(cells))
  return '\n'.join(lines)


def machine() -> str:
  """A one-line description of where this ran."""
  device = jax.devices()[0]
  return (
    f'{platform.node()}: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}),'
    f' {len(jax.devices())} x {device.platform} {device.device_kind}, JAX {jax.__version__}'
  )
