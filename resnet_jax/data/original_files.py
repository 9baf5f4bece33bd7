"""Datasets read from their own original files, the ones their authors publish, with numpy
and the standard library alone: the IDX files of MNIST and Fashion-MNIST, the pickles of
CIFAR-10's and CIFAR-100's python version.

So that data.pipeline='device' trains on a machine without TensorFlow or TFDS: the config
field data.original_dir names the directory that holds the files, and only the device
pipeline reads it. The files' order is not TFDS's (TFDS shuffles the examples when it
prepares a dataset), so a slice such as 'train[:45000]' selects other examples than on the
TFDS path; whole splits hold the same examples.

  split = original_files.load('cifar10', '/data/cifar', 'train[:45000]')  # uint8 [N, H, W, C]
"""

import contextlib
import dataclasses
import gzip
import math
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np

from resnet_jax.data import splits
from resnet_jax.errors import ConfigError

DATASETS = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100')  # TFDS's names
_NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10, 'cifar100': 100}
_CIFAR_SOURCE = 'from https://www.cs.toronto.edu/~kriz/cifar.html (the python version)'
_SOURCES = {  # where to get the files: the errors say 'download them <source>'
  'mnist': 'from https://storage.googleapis.com/cvdf-datasets/mnist/',
  'fashion_mnist': (
    'from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ or with apt-get install '
    'dataset-fashion-mnist (into /usr/share/datasets/fashion-mnist)'
  ),
  'cifar10': _CIFAR_SOURCE,
  'cifar100': _CIFAR_SOURCE,
}

# IDX: a big-endian header of the magic number (unsigned bytes, 3 or 1 dimensions) and the
# size of each dimension, then the values. The test split's files are named t10k.
_IDX_PREFIXES = {'train': 'train', 'test': 't10k'}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049


@dataclasses.dataclass(frozen=True)
class _Cifar:
  archive: str  # the download
  folder: str  # what it extracts to
  files: dict[str, tuple[str, ...]]  # split -> its pickles, in order
  label_key: bytes


_CIFAR = {
  'cifar10': _Cifar(
    'cifar-10-python.tar.gz',
    'cifar-10-batches-py',
    {'train': tuple(f'data_batch_{i}' for i in range(1, 6)), 'test': ('test_batch',)},
    b'labels',
  ),
  # TFDS's cifar100 'label' is the fine label.
  'cifar100': _Cifar(
    'cifar-100-python.tar.gz',
    'cifar-100-python',
    {'train': ('train',), 'test': ('test',)},
    b'fine_labels',
  ),
}


def load(name: str, directory: str, split: str) -> splits.InMemorySplit:
  """The TFDS split string `split` of dataset `name` from its original files in `directory`,
  sliced in the files' order; a one-line ConfigError for an unknown name, a split string
  that does not fit or selects nothing, and files that are missing or damaged (it says where
  to download them).

  mnist, fashion_mnist: {train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped (.gz, read
  when both are there) or not. cifar10, cifar100: the python version's tar.gz, read without
  extracting it (when there), else the folder it extracts to, in `directory` or `directory`
  itself. Every split is read: the string's percentages need the sizes of all.
  """
  _check_name(name)
  if not os.path.isdir(directory):
    raise ConfigError(
      f"no directory {directory} to read {name}'s original files from (data.original_dir): "
      f'download them there {_SOURCES[name]}'
    )
  arrays = _read_cifar(name, directory) if name in _CIFAR else _read_idx_files(name, directory)
  parts = splits.nonempty_slices(name, split, {k: len(labels) for k, (_, labels) in arrays.items()})
  images, labels = (
    np.concatenate([arrays[k][i][start:stop] for k, start, stop in parts]) for i in (0, 1)
  )
  return splits.InMemorySplit(images, labels, _NUM_CLASSES[name])


def classes_and_channels(name: str) -> tuple[int, int]:
  """Dataset `name`'s number of classes and of image channels, known without its files
  (what a report of a run needs to size its network)."""
  _check_name(name)
  return _NUM_CLASSES[name], 3 if name in _CIFAR else 1


def _check_name(name: str):
  if name not in DATASETS:
    raise ConfigError(
      f'data.original_dir reads {", ".join(DATASETS)}, not {name!r}: for other datasets set '
      "data.original_dir='' and prepare them with TFDS (python -m resnet_jax.data.prepare)"
    )


def _read_idx_files(name: str, directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """split -> uint8 [N, rows, cols, 1] images and int32 [N] labels."""
  bases = [
    f'{p}-{kind}-ubyte' for p in _IDX_PREFIXES.values() for kind in ('images-idx3', 'labels-idx1')
  ]
  paths = {}
  for base in bases:
    candidates = [os.path.join(directory, base + ext) for ext in ('.gz', '')]
    paths[base] = next((path for path in candidates if os.path.isfile(path)), None)
  missing = [f'{base}[.gz]' for base, path in paths.items() if path is None]
  if missing:
    raise ConfigError(
      f"{name}'s original files are not in {directory}: no {', '.join(missing)}; download "
      f'them {_SOURCES[name]}'
    )
  arrays = {}
  for split, prefix in _IDX_PREFIXES.items():
    images_path = paths[f'{prefix}-images-idx3-ubyte']
    labels_path = paths[f'{prefix}-labels-idx1-ubyte']
    images = _read_idx(name, images_path, _IDX_IMAGES)
    labels = _read_idx(name, labels_path, _IDX_LABELS)
    if len(images) != len(labels):
      raise ConfigError(
        f'{labels_path} holds {len(labels)} labels and {images_path} {len(images)} images: '
        f'one is damaged; download both again {_SOURCES[name]}'
      )
    if labels.max(initial=0) >= _NUM_CLASSES[name]:
      raise _damaged(name, labels_path, f'a label is {labels.max()}, not under 10')
    arrays[split] = images[..., None], labels.astype(np.int32)
  return arrays


def _read_idx(name: str, path: str, magic: int) -> np.ndarray:
  opener = gzip.open if path.endswith('.gz') else open
  with _reading(name, path), opener(path, 'rb') as f:
    data = f.read()
  header_size = 8 if magic == _IDX_LABELS else 16
  if len(data) < header_size:
    raise _damaged(name, path, f'{len(data)} bytes, shorter than its IDX header')
  found, *shape = struct.unpack(f'>{header_size // 4}I', data[:header_size])
  if found != magic:
    raise _damaged(name, path, f'the IDX magic number is {found}, not {magic}')
  if len(data) != header_size + math.prod(shape):
    raise _damaged(
      name, path, f'{len(data)} bytes, not the {header_size + math.prod(shape)} of shape {shape}'
    )
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def _read_cifar(name: str, directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """split -> uint8 [N, 32, 32, 3] images and int32 [N] labels."""
  cifar = _CIFAR[name]
  files = [file for split_files in cifar.files.values() for file in split_files]
  archive = os.path.join(directory, cifar.archive)
  if os.path.isfile(archive):
    members = _read_tar(name, archive, {f'{cifar.folder}/{file}': file for file in files})
    paths = {file: f'{archive}:{cifar.folder}/{file}' for file in files}
  else:
    folder = os.path.join(directory, cifar.folder)
    if not os.path.isdir(folder):
      if not any(os.path.isfile(os.path.join(directory, file)) for file in files):
        raise ConfigError(
          f"{name}'s original files are not in {directory}: no {cifar.archive}, no folder "
          f'{cifar.folder}/ and no {", ".join(files)}; download it {_SOURCES[name]}'
        )
      folder = directory
    paths = {file: os.path.join(folder, file) for file in files}
    missing = [file for file, path in paths.items() if not os.path.isfile(path)]
    if missing:
      raise ConfigError(
        f'{folder} lacks {", ".join(missing)}: extract {cifar.archive} again (download it '
        f'{_SOURCES[name]})'
      )
    members = {}
    for file, path in paths.items():
      with _reading(name, path), open(path, 'rb') as f:
        members[file] = f.read()
  batches = {file: _unpickle(name, paths[file], members[file]) for file in files}
  return {
    split: tuple(np.concatenate([batches[file][i] for file in split_files]) for i in (0, 1))
    for split, split_files in cifar.files.items()
  }


def _read_tar(name: str, path: str, wanted: dict[str, str]) -> dict[str, bytes]:
  """The contents of the archive's members `wanted` (path in the archive -> key), in one pass
  through the gzip stream."""
  members = {}
  with _reading(name, path), tarfile.open(path, 'r:gz') as tar:
    for member in tar:
      if member.name in wanted and member.isfile():
        members[wanted[member.name]] = tar.extractfile(member).read()
  missing = [member for member, key in wanted.items() if key not in members]
  if missing:
    raise _damaged(name, path, f'no {", ".join(missing)} in it')
  return members


def _unpickle(name: str, path: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
  """A CIFAR batch: a pickle (Python 2's: its str are bytes here) of a dict whose b'data'
  holds uint8 [N, 3072] rows, each the 1024 red, then green, then blue values of a 32x32
  image in row-major order, and whose label key a list of N labels."""
  label_key = _CIFAR[name].label_key
  try:
    batch = pickle.loads(data, encoding='bytes')
  except Exception as e:  # a damaged pickle fails in any of many ways
    raise _damaged(name, path, f'not a pickle: {type(e).__name__}: {e}') from None
  if not isinstance(batch, dict):
    raise _damaged(name, path, f'a pickle of {type(batch).__name__}, not of a dict')
  images, labels = batch.get(b'data'), np.asarray(batch.get(label_key))
  if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2):
    raise _damaged(name, path, "no b'data' of uint8 [N, 3072]")
  if images.shape[1] != 3 * 32 * 32:
    raise _damaged(name, path, f"b'data' of shape {images.shape}, not [N, 3072]")
  num_classes = _NUM_CLASSES[name]
  if not (
    labels.shape == (len(images),)
    and labels.dtype.kind in 'iu'
    and ((labels >= 0) & (labels < num_classes)).all()
  ):
    raise _damaged(
      name, path, f'no {label_key!r} of {len(images)} labels in [0, {num_classes}) for its images'
    )
  return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int32)


@contextlib.contextmanager
def _reading(name: str, path: str):
  """Errors of reading `path` as one-line ConfigErrors."""
  try:
    yield
  except (gzip.BadGzipFile, tarfile.TarError, EOFError, zlib.error) as e:
    raise _damaged(name, path, f'{type(e).__name__}: {e}') from None
  except OSError as e:
    raise ConfigError(f'cannot read {path}: {e.strerror or e}') from None


def _damaged(name: str, path: str, why: str) -> ConfigError:
  return ConfigError(f'{path} is damaged ({why}): download it again {_SOURCES[name]}')
