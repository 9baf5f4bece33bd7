"""What a dataset name and a split string refer to, without TensorFlow.

Shared by the tf.data pipeline (sources.py, pipeline.py) and the device pipeline
(device_data.py), which must not import TensorFlow: the TFDS builder of a name, a split
string resolved against the split sizes, a prepared split's metadata (or the error that
says how to prepare it), and the order in which eval batches cover a split.
"""

import dataclasses
import difflib
import types

import numpy as np
import tensorflow_datasets as tfds

from resnet_jax.errors import ConfigError

# TFDS splits up to this size are held in memory: decoded [N, H, W, C] uint8 when their
# images have a fixed shape (the size counted decoded), else encoded.
MAX_IN_MEMORY_BYTES = 4 << 30
FOLDER_PREFIX = 'image_folder:'
SYNTHETIC = 'synthetic'


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
  """A prepared TFDS split as its metadata describes it; no example read yet."""

  builder: tfds.core.DatasetBuilder
  keys: tuple[str, str]  # the image and label features
  image_feature: tfds.features.Image
  num_classes: int
  fixed_shape: bool  # every image is image_feature.shape
  memory_bytes: int  # held in memory: decoded when the shape is fixed, else encoded


def prepared(name: str, split: str, data_dir: str | None) -> PreparedSplit:
  """The metadata of `split` of the TFDS dataset `name`; a ConfigError if it is unknown,
  not prepared, or the split string does not fit its splits."""
  builder = tfds_builder(name, data_dir)
  keys = builder.info.supervised_keys or ('image', 'label')
  image_feature = builder.info.features[keys[0]]
  if not builder.info.splits:
    raise not_prepared(builder, data_dir)
  infos = builder.info.splits
  parts = slices(split, {k: v.num_examples for k, v in infos.items()})
  fixed_shape = all(d is not None for d in image_feature.shape)
  if fixed_shape:
    memory_bytes = sum(stop - start for _, start, stop in parts) * np.prod(image_feature.shape)
  else:
    memory_bytes = sum(
      infos[k].num_bytes * (stop - start) // max(infos[k].num_examples, 1)
      for k, start, stop in parts
    )
  num_classes = builder.info.features[keys[1]].num_classes
  return PreparedSplit(builder, keys, image_feature, num_classes, fixed_shape, int(memory_bytes))


def read_all(source) -> list[dict]:
  """Every example of a TFDS data source, read a chunk of records per call."""
  return [
    example
    for start in range(0, len(source), 4096)
    for example in source.__getitems__(range(start, min(start + 4096, len(source))))
  ]


def tfds_builder(name: str, data_dir: str | None, **kwargs):
  try:
    return tfds.builder(name, data_dir=data_dir, **kwargs)
  except tfds.core.registered.DatasetNotFoundError:
    known = list(tfds.list_builders()) + [SYNTHETIC, FOLDER_PREFIX]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f'; did you mean {" or ".join(close)}?' if close else ''
    raise ConfigError(
      f'unknown dataset {name!r}{hint} (a TFDS name, {FOLDER_PREFIX}<path> or {SYNTHETIC})'
    ) from None


def not_prepared(builder, data_dir: str | None) -> ConfigError:
  command = f'python -m resnet_jax.data.prepare {builder.name}'
  if data_dir:
    command += f' --data_dir {data_dir}'
  return ConfigError(
    f'dataset {builder.name!r} is not prepared in {builder.data_dir}; run: {command}'
  )


def slices(split: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
  """Resolves a TFDS split string against split sizes into (name, start, stop) slices."""
  infos = {k: types.SimpleNamespace(num_examples=n) for k, n in sizes.items()}
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
  except (ValueError, KeyError, AssertionError):
    raise ConfigError(
      f'unknown or malformed split {split!r}: the splits are {sorted(sizes)}, '
      "sliced like 'train[:45000]' or 'train[90%:]'"
    ) from None
  return [
    (i.splitname, i.from_ or 0, sizes[i.splitname] if i.to is None else i.to) for i in instructions
  ]


def eval_indices(num_examples, global_batch_size, process_index, process_count):
  """[num_batches, local_batch] example indices of this process and their mask."""
  local_batch = global_batch_size // process_count
  num_batches = -(-num_examples // global_batch_size)
  rows = np.arange(num_batches)[:, None] * global_batch_size
  positions = rows + process_index * local_batch + np.arange(local_batch)[None, :]
  return np.minimum(positions, num_examples - 1), positions < num_examples
