"""What a split string selects and what a run learns of its dataset, without TensorFlow or
TFDS: shared by the tf.data pipeline and the device pipeline, which must run where neither
is installed.

TFDS's split syntax ('train', 'train[:45000]', 'train[90%:]', 'train[:50%]+test') is
parsed here rather than by tfds.core.ReadInstruction for that reason; tests check that
both resolve a table of split strings alike.
"""

import dataclasses
import re

import numpy as np

from resnet_jax.errors import ConfigError

# TFDS splits up to this size are held in memory: decoded [N, H, W, C] uint8 when their
# images have a fixed shape (the size counted decoded), else encoded.
MAX_IN_MEMORY_BYTES = 4 << 30
FOLDER_PREFIX = 'image_folder:'
SYNTHETIC = 'synthetic'

# One term of a split string: a split's name, optionally sliced by example counts (negative:
# from the end) or by percentages, which TFDS rounds to the closest example.
_TERM = re.compile(r'(?P<name>[\w-]+)(?:\[(?P<start>-?[\d.]+%?)?:(?P<stop>-?[\d.]+%?)?\])?')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the schedule need to know of a dataset before the first step."""

  num_classes: int
  num_channels: int
  image_size: int
  num_train_examples: int
  num_eval_examples: int


@dataclasses.dataclass(frozen=True)
class InMemorySplit:
  """A whole split, decoded: what data.pipeline='device' places on every device."""

  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int32 [N]
  num_classes: int


def slices(split: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
  """Resolves a TFDS split string against split sizes into (name, start, stop) slices."""
  malformed = ConfigError(
    f'unknown or malformed split {split!r}: the splits are {sorted(sizes)}, '
    "sliced like 'train[:45000]' or 'train[90%:]'"
  )
  resolved = []
  for term in re.split(r'\s*\+\s*', split.strip()):
    match = _TERM.fullmatch(term)
    if not match or match['name'] not in sizes:
      raise malformed
    size = sizes[match['name']]
    if len({b.endswith('%') for b in (match['start'], match['stop']) if b}) > 1:
      raise malformed  # a percentage and a count
    try:
      start, stop = _position(match['start'], size, 0), _position(match['stop'], size, size)
    except ValueError:
      raise malformed from None
    if start > stop:
      raise ConfigError(f'split {split!r}: {term!r} selects no examples')
    resolved.append((match['name'], start, stop))
  return resolved


def nonempty_slices(name: str, split: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
  """`slices` of dataset `name`'s split string, refused where they select no example (what
  a whole dataset is read for, in memory)."""
  parts = slices(split, sizes)
  if all(start == stop for _, start, stop in parts):
    raise ConfigError(f'split {split!r} of {name} is empty')
  return parts


def _position(bound: str | None, size: int, default: int) -> int:
  """A slice bound as an example index in [0, size]; ValueError where it is outside."""
  if not bound:
    return default
  percent = bound.endswith('%')
  position = int(round(float(bound[:-1]) * size / 100)) if percent else int(bound)
  if abs(position) > size:
    raise ValueError(bound)
  return position + size if position < 0 else position


def eval_indices(num_examples, global_batch_size, process_index, process_count):
  """[num_batches, local_batch] example indices of this process and their mask."""
  local_batch = global_batch_size // process_count
  num_batches = -(-num_examples // global_batch_size)
  rows = np.arange(num_batches)[:, None] * global_batch_size
  positions = rows + process_index * local_batch + np.arange(local_batch)[None, :]
  return np.minimum(positions, num_examples - 1), positions < num_examples
