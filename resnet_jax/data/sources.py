"""Where examples come from: TFDS datasets, image folders, synthetic images.

A source split is random access: `read(index)` maps an int64 scalar tensor to
`(raw_image, label)`, where the raw image is either encoded bytes (JPEG/PNG...)
or a decoded uint8 HWC tensor. Random access is what lets the pipeline put any
example anywhere in the stream, so the batch order is a pure function of the
seed and a run can resume at any step without replaying the input.

Small TFDS splits (CIFAR, MNIST, Fashion-MNIST: up to `MAX_IN_MEMORY_BYTES`,
decoded size when the images have a fixed shape, else encoded) are loaded into
memory once per process, decoded when their images have a fixed shape. Large
ones (ImageNet) are read by index from TFDS's array_record files, which is how
`python -m resnet_jax.data.prepare` writes them.
"""

import dataclasses
import functools
import os
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from resnet_jax.data import splits, tfds_files
from resnet_jax.data.splits import FOLDER_PREFIX, MAX_IN_MEMORY_BYTES, SYNTHETIC, DatasetInfo
from resnet_jax.data.tf_setup import tf
from resnet_jax.errors import ConfigError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split (or slice of splits) of a source, addressable by example index."""

  num_examples: int
  num_classes: int
  num_channels: int
  encoded: bool  # read() yields encoded image bytes, else a decoded uint8 HWC image
  read: Callable  # int64 scalar tensor -> (raw image, int32 label)
  describe: Callable[[int], str]  # names example `index` in error messages
  images: np.ndarray | None = None  # decoded [N, H, W, C] uint8, when held in memory
  jpeg_only: bool = False  # every encoded image is a JPEG


def open_split(data_config, split: str) -> Split:
  """Returns the split `split` (a TFDS split string) of `data_config.dataset`."""
  name = data_config.dataset
  if name == SYNTHETIC:
    return _synthetic_split(split, data_config.image_size)
  if name.startswith(FOLDER_PREFIX):
    return _folder_split(name[len(FOLDER_PREFIX) :], split)
  return _tfds_split(name, split, data_config.data_dir or None)


def get_dataset_info(data_config) -> DatasetInfo:
  train = open_split(data_config, data_config.train_split)
  evaluation = open_split(data_config, data_config.eval_split)
  return DatasetInfo(
    num_classes=train.num_classes,
    num_channels=train.num_channels,
    image_size=data_config.image_size,
    num_train_examples=train.num_examples,
    num_eval_examples=evaluation.num_examples,
  )


def find_unreadable(split: Split, indices) -> str | None:
  """Decodes the examples `indices` one by one; names the first that fails, if any."""
  if not split.encoded:
    return None
  for index in indices:
    raw, _ = split.read(tf.constant(int(index), tf.int64))
    try:
      tf.io.decode_image(raw, channels=split.num_channels, expand_animations=False)
    except tf.errors.InvalidArgumentError:
      return split.describe(int(index))
  return None


# ------------------------------------------------------------------------------ synthetic

_SYNTHETIC_SIZES = {
  'small': {'train': 50_000, 'test': 10_000, 'validation': 10_000},
  'large': {'train': 1_281_167, 'test': 50_000, 'validation': 50_000},
}


def _synthetic_split(split: str, image_size: int) -> Split:
  """Random uint8 images and labels, a pure function of the index; no I/O.

  ImageNet-like (1000 classes, 1.28M/50k examples) for image_size >= 64, else
  CIFAR-like (10 classes, 50k/10k); always 3 channels.
  """
  large = image_size >= 64
  num_classes = 1000 if large else 10
  sizes = _SYNTHETIC_SIZES['large' if large else 'small']
  slices = splits.slices(split, sizes)
  num_examples = sum(stop - start for _, start, stop in slices)
  salt = sum(ord(c) for c in split)

  def read(index):
    seed = tf.stack([tf.cast(index, tf.int64), tf.constant(salt, tf.int64)])
    image = tf.random.stateless_uniform(
      [image_size, image_size, 3], seed, minval=0, maxval=256, dtype=tf.int32
    )
    label = tf.random.stateless_uniform([], seed[::-1], 0, num_classes, dtype=tf.int32)
    return tf.cast(image, tf.uint8), label

  return Split(num_examples, num_classes, 3, False, read, lambda i: f'synthetic example {i}')


# ------------------------------------------------------------------------------ image folder


def _class_folders(root: str) -> list[str]:
  return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def _folder_split(path: str, split: str) -> Split:
  """`path` holds one subfolder per class (sorted names -> labels 0..K-1).

  `path/<name>/` split folders (train/, val/, ...) are used when present; else the
  whole folder is the `train` split. Split strings slice it (`train[:90%]`).
  """
  if not os.path.isdir(path):
    raise ConfigError(f'image folder {path!r} does not exist')
  subdirs = _class_folders(path)
  split_roots = {
    d: os.path.join(path, d) for d in subdirs if d in ('train', 'val', 'validation', 'test')
  }
  if not split_roots:
    split_roots = {'train': path}
  class_names = _class_folders(split_roots.get('train', next(iter(split_roots.values()))))
  if not class_names:
    raise ConfigError(f'image folder {path!r} is empty: it needs one subfolder of images per class')

  files: dict[str, list[tuple[str, int]]] = {}
  for name, root in split_roots.items():
    files[name] = [
      (os.path.join(root, c, f), label)
      for label, c in enumerate(class_names)
      if os.path.isdir(os.path.join(root, c))
      for f in sorted(os.listdir(os.path.join(root, c)))
      if f.lower().endswith(IMAGE_EXTENSIONS)
    ]
  examples = [
    ex
    for name, start, stop in splits.slices(split, {k: len(v) for k, v in files.items()})
    for ex in files[name][start:stop]
  ]
  if not examples:
    raise ConfigError(
      f'image folder {path!r} has no images ({", ".join(IMAGE_EXTENSIONS)}) in split {split!r}'
    )
  paths = tf.constant([p for p, _ in examples])
  labels = tf.constant([label for _, label in examples], tf.int32)

  def read(index):
    return tf.io.read_file(tf.gather(paths, index)), tf.gather(labels, index)

  jpeg_only = all(p.lower().endswith(('.jpg', '.jpeg')) for p, _ in examples)
  return Split(
    len(examples),
    len(class_names),
    3,
    True,
    read,
    lambda i: f'unreadable image {examples[i][0]}',
    jpeg_only=jpeg_only,
  )


# ------------------------------------------------------------------------------ TFDS


def _tfds_split(name: str, split: str, data_dir: str | None) -> Split:
  meta = tfds_files.prepared(name, split, data_dir)
  builder, keys = meta.builder, meta.keys
  num_channels = meta.image_feature.shape[-1] or 3
  describe = lambda i: f'example {i} of {name} split {split!r}'
  jpeg_only = getattr(meta.image_feature, 'encoding_format', None) == 'jpeg'

  if meta.memory_bytes > MAX_IN_MEMORY_BYTES:
    source = _data_source(builder, split, keys)
    return Split(
      len(source),
      meta.num_classes,
      num_channels,
      True,
      _data_source_reader(source, keys),
      describe,
      jpeg_only=jpeg_only,
    )

  fixed_shape = meta.fixed_shape
  images, labels = _load_cached(
    str(builder.data_dir), name, data_dir, split, keys, fixed_shape, num_channels
  )
  labels_t = tf.constant(labels)
  images_t = tf.constant(images, tf.uint8 if fixed_shape else tf.string)
  read = lambda index: (tf.gather(images_t, index), tf.gather(labels_t, index))
  return Split(
    len(labels),
    meta.num_classes,
    num_channels,
    not fixed_shape,
    read,
    describe,
    images if fixed_shape else None,
    jpeg_only,
  )


@functools.lru_cache(maxsize=8)
def _load_cached(prepared_dir, name, data_dir, split, keys, decode, channels):
  """The whole split as numpy: uint8 [N, H, W, C] images when `decode`, else encoded bytes.

  Cached per process by the folder of the prepared files (`prepared_dir`, the builder's
  data_dir), so that a split is never served from a cache filled from another folder.
  """
  del prepared_dir
  builder = tfds.builder(name, data_dir=data_dir)
  image_key, label_key = keys
  if builder.info.file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD:
    examples = tfds_files.read_all(_data_source(builder, split, keys))
    ds = tf.data.Dataset.from_tensor_slices(
      (
        tf.constant(np.array([ex[image_key] for ex in examples], dtype=object), tf.string),
        tf.constant([ex[label_key] for ex in examples], tf.int32),
      )
    )
    if decode:
      ds = ds.map(
        lambda raw, label: (tf.io.decode_image(raw, channels, expand_animations=False), label),
        num_parallel_calls=tf.data.AUTOTUNE,
      )
  else:
    decoders = None if decode else {image_key: tfds.decode.SkipDecoding()}
    ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    ds = ds.map(
      lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)),
      num_parallel_calls=tf.data.AUTOTUNE,
    )
  batches = list(ds.batch(4096).prefetch(2).as_numpy_iterator())
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def _data_source(builder, split, keys):
  if builder.info.file_format != tfds.core.file_adapters.FileFormat.ARRAY_RECORD:
    raise ConfigError(
      f'{builder.name} {split!r} is too large to hold in memory and is stored as '
      f'{builder.info.file_format.value}, which has no random access; re-prepare it as '
      f'array_record: python -m resnet_jax.data.prepare {builder.name}'
    )
  return builder.as_data_source(split, decoders={keys[0]: tfds.decode.SkipDecoding()})


def _data_source_reader(source, keys):
  """Reads one example by index from array_record (encoded bytes, no decoding)."""
  image_key, label_key = keys

  def read_np(index):
    example = source[int(index)]
    # An object array keeps the bytes intact (np.bytes_ would drop trailing NULs).
    return np.array(example[image_key], dtype=object), np.int32(example[label_key])

  def read(index):
    image, label = tf.numpy_function(read_np, [index], [tf.string, tf.int32], stateful=False)
    return tf.ensure_shape(image, []), tf.ensure_shape(label, [])

  return read
