"""Builders of small on-disk datasets for the resnet_jax.data tests (plain functions)."""

import contextlib
import hashlib
import io
import os
import tarfile

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from resnet_jax import defaults
from resnet_jax.data.tf_setup import tf


def data_config(**fields) -> ml_collections.ConfigDict:
  """`config.data` of the defaults with `fields` overridden (new keys allowed)."""
  config = defaults.get_config().data
  with config.unlocked():
    for name, value in fields.items():
      setattr(config, name, value)
  return config


def jpeg_bytes(rng: np.random.Generator, height: int, width: int, fmt='JPEG') -> bytes:
  pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  encode = tf.io.encode_png if fmt == 'PNG' else tf.io.encode_jpeg
  return encode(pixels).numpy()


def image_folder(root, classes=('cat', 'dog', 'emu'), per_class=4, seed=0) -> str:
  """root/<class>/<i>.jpg with random JPEGs of varying size (one PNG in the last class)."""
  rng = np.random.default_rng(seed)
  for c in classes:
    os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(per_class):
      fmt = 'PNG' if (c == classes[-1] and i == 0) else 'JPEG'
      name = f'{i}.{"png" if fmt == "PNG" else "jpg"}'
      with open(os.path.join(root, c, name), 'wb') as f:
        f.write(jpeg_bytes(rng, 40 + 7 * i, 50 + 5 * i, fmt))
  return str(root)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def fake_imagenet_manual_dir(
  root, synsets=('n01440764', 'n01443537'), per_synset=3, num_val=4
) -> str:
  """The two tars the real imagenet2012 builder reads, with a few small JPEGs each."""
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  with tarfile.open(os.path.join(root, 'ILSVRC2012_img_train.tar'), 'w') as train:
    for synset in synsets:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as synset_tar:
        for i in range(per_synset):
          _add_bytes(synset_tar, f'{synset}_{i}.JPEG', jpeg_bytes(rng, 60 + i, 80))
      _add_bytes(train, f'{synset}.tar', inner.getvalue())
  with tarfile.open(os.path.join(root, 'ILSVRC2012_img_val.tar'), 'w') as val:
    for i in range(1, num_val + 1):
      _add_bytes(val, f'ILSVRC2012_val_{i:08d}.JPEG', jpeg_bytes(rng, 70, 90))
  return str(root)


def tiny_tfds_dataset(data_dir, name='tiny_digits', sizes=(('train', 30), ('test', 7))):
  """A prepared TFDS dataset (array_record) whose image i of a split has pixel [0, 0] = i."""
  splits = {}
  for split, n in sizes:
    images = np.zeros((n, 8, 8, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    images[:, 1:, :, 0] = np.arange(n)[:, None, None] % 7 * 30
    splits[split] = [(i, {'image': im, 'label': i % 3}) for i, im in enumerate(images)]
  features = tfds.features.FeaturesDict(
    {
      'image': tfds.features.Image(shape=(8, 8, 1)),
      'label': tfds.features.ClassLabel(num_classes=3),
    }
  )
  tfds.dataset_builders.store_as_tfds_dataset(
    name=name,
    version='1.0.0',
    features=features,
    split_datasets=splits,
    data_dir=str(data_dir),
    file_format='array_record',
    disable_shuffling=True,
  )
  return name


@contextlib.contextmanager
def mock_prepared(name: str, num_examples: int, root):
  """TFDS's real `name` builder, prepared as far as the code can tell: its split sizes
  (`num_examples` each) are written where `tfds.testing.mock_data` reads metadata (a
  folder of `root`), and the mock serves `num_examples` random examples per split."""
  builder = tfds.builder(name, data_dir=str(root))
  splits = [
    tfds.core.SplitInfo(name=split, shard_lengths=[num_examples], num_bytes=0)
    for split in ('train', 'validation', 'test')
  ]
  builder.info.set_splits(tfds.core.SplitDict(splits))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(
    num_examples=num_examples, data_dir=str(root), policy=tfds.testing.MockPolicy.USE_FILES
  ):
    yield


def digest(array: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def take(iterator, n: int) -> list[dict]:
  return [next(iterator) for _ in range(n)]
