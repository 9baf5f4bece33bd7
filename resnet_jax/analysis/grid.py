"""A grid of config overrides: its points, in order, and a directory name for each.

`--grid model.depth=20,56 --grid model.shortcut=A,none` gives four points, the first
grid outermost: depth-20_shortcut-A, depth-20_shortcut-none, depth-56_shortcut-A, ...
A point's name uses the last part of each key unless two keys share it.

Keys joined by `/` move together, one value each: `--grid
data.mixup_alpha/optim.label_smoothing=0/0,0.2/0.1` is an axis of two points (a recipe
and its variant), not four.
"""

import ast
import dataclasses
import itertools
import re

from resnet_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the grid: its overrides (key -> value, as typed) and its directory name."""

  name: str
  overrides: tuple[tuple[str, str], ...]

  def flags(self) -> list[str]:
    """The overrides as train.py flags."""
    return [f'--config.{key}={value}' for key, value in self.overrides]


def parse_axis(spec: str) -> tuple[str, list[str]]:
  """'model.depth=20,56' -> ('model.depth', ['20', '56']); 'a.x/b.y=1/2,3/4' ->
  ('a.x/b.y', ['1/2', '3/4'])."""
  key, sep, values = spec.partition('=')
  choices = [v.strip() for v in values.split(',')]
  if not sep or not key.strip() or not all(choices):
    raise ConfigError(f'grid axis {spec!r}: expected KEY=VALUE[,VALUE...], e.g. model.depth=20,56')
  if len(set(choices)) != len(choices):
    raise ConfigError(f'grid axis {spec!r} repeats a value')
  tied = len(key.split('/'))
  if any(len(choice.split('/')) != tied for choice in choices):
    raise ConfigError(f'grid axis {spec!r}: each value needs {tied} parts joined by /, one a key')
  return key.strip(), choices


def _label(value: str) -> str:
  return re.sub(r'[^A-Za-z0-9.+]', '_', value)


def points(axes: list[tuple[str, list[str]]]) -> list[Point]:
  """Every combination of the axes' values, the first axis outermost."""
  keys = [key for axis_keys, _ in axes for key in axis_keys.split('/')]
  if len(set(keys)) != len(keys):
    raise ConfigError(f'a grid key appears twice: {keys}')
  short = [key.rsplit('.', 1)[-1] for key in keys]
  labels = [s if short.count(s) == 1 else key for s, key in zip(short, keys, strict=True)]
  result = []
  for choices in itertools.product(*(choices for _, choices in axes)):
    values = [value for choice in choices for value in choice.split('/')]
    name = '_'.join(f'{_label(k)}-{_label(v)}' for k, v in zip(labels, values, strict=True))
    result.append(Point(name or 'default', tuple(zip(keys, values, strict=True))))
  names = [p.name for p in result]
  if len(set(names)) != len(names):
    raise ConfigError(f'grid values differing only in punctuation give equal run names: {names}')
  return result


def shard(all_points: list[Point], spec: str) -> list[Point]:
  """The points host i of n runs, for spec 'i/n': every n-th, from the i-th."""
  match = re.fullmatch(r'(\d+)/(\d+)', spec)
  if not match or not int(match[1]) < int(match[2]):
    raise ConfigError(f'--shard={spec!r}: expected I/N with 0 <= I < N, e.g. 0/4')
  index, count = int(match[1]), int(match[2])
  return all_points[index::count]


def _parse(key: str, value: str, old):
  """`value` typed like the field `key` it replaces (as absl parses --config.KEY=VALUE)."""
  if isinstance(old, str):
    return value
  if isinstance(old, bool):
    if value.lower() not in ('true', 'false'):
      raise ConfigError(f'{key}: expected true or false, got {value!r}')
    return value.lower() == 'true'
  try:
    return type(old)(ast.literal_eval(value))
  except (ValueError, TypeError, SyntaxError):
    raise ConfigError(f'{key}: expected a {type(old).__name__}, got {value!r}') from None


def apply(config, point: Point):
  """A copy of `config` (an ml_collections ConfigDict) with the point's overrides."""
  config = config.copy_and_resolve_references()
  for key, value in point.overrides:
    *parents, field = key.split('.')
    parent = config
    for name in parents:
      parent = parent[name]
    if field not in parent:
      raise ConfigError(f'{key}: the config has no such field')
    parent[field] = _parse(key, value, parent[field])
  return config
