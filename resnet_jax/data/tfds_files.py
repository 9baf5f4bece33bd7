"""A TFDS dataset's prepared files: its builder, a split's metadata (or the error that says
how to prepare it) and its records, through tensorflow_datasets without TensorFlow."""

import dataclasses
import difflib

import numpy as np
import tensorflow_datasets as tfds

from resnet_jax.data import splits
from resnet_jax.data.splits import FOLDER_PREFIX, SYNTHETIC
from resnet_jax.errors import ConfigError


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
  not prepared, or the split string does not fit its splits or selects no example."""
  builder = tfds_builder(name, data_dir)
  keys = builder.info.supervised_keys or ('image', 'label')
  image_feature = builder.info.features[keys[0]]
  if not builder.info.splits:
    raise not_prepared(builder, data_dir)
  infos = builder.info.splits
  # (TFDS fails to open an empty split, with a ValueError.)
  parts = splits.nonempty_slices(name, split, {k: v.num_examples for k, v in infos.items()})
  num_examples = sum(stop - start for _, start, stop in parts)
  fixed_shape = all(d is not None for d in image_feature.shape)
  if fixed_shape:
    memory_bytes = num_examples * np.prod(image_feature.shape)
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
