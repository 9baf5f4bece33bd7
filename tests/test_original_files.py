"""resnet_jax.data.original_files: small files written as upstream lays them out (IDX,
gzipped or not; CIFAR's Python 2 pickles, in their tar.gz or extracted) read back as
written and sliced as numpy slices them; each missing or damaged input is a one-line
ConfigError that says what to do; nothing of TensorFlow is imported. (That Debian's
Fashion-MNIST files hold the examples of TFDS's prepared fashion_mnist: test_device_data.py,
beside the other tests of that prepared dataset.)"""

import gzip
import io
import os
import pickle
import struct
import tarfile
import textwrap

import numpy as np
import pytest

from resnet_jax.data import original_files
from resnet_jax.errors import ConfigError
from tests import entry_points

TRAIN, TEST = 10, 2  # examples written per split: CIFAR-10's train in 5 batch files of 2
# The order of the members of the real cifar-10-python.tar.gz: not the batches' order.
CIFAR10_MEMBERS = (
  'data_batch_4',
  'readme.html',
  'test_batch',
  'data_batch_3',
  'batches.meta',
  'data_batch_2',
  'data_batch_5',
  'data_batch_1',
)
CIFAR100_MEMBERS = ('file.txt~', 'train', 'test', 'meta')


def _random_split(rng, num_examples, shape, num_classes=10):
  images = rng.integers(0, 256, (num_examples, *shape), np.uint8)
  return images, rng.integers(0, num_classes, num_examples).astype(np.int32)


def _write(path, data: bytes):
  with open(path, 'wb') as f:
    f.write(data)


def _assert_split(split, images, labels, num_classes=10):
  assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
  assert split.num_classes == num_classes
  np.testing.assert_array_equal(split.images, images)
  np.testing.assert_array_equal(split.labels, labels)


# ------------------------------------------------------------------------------- IDX


def _idx_images(images) -> bytes:
  """[N, rows, cols, 1] as an IDX file: magic 2051, N, rows, cols, then the pixels."""
  return struct.pack('>4I', 2051, *images.shape[:3]) + images.tobytes()


def _idx_labels(labels) -> bytes:
  return struct.pack('>2I', 2049, len(labels)) + np.asarray(labels, np.uint8).tobytes()


def _write_idx(directory, seed=0, gz=True) -> dict:
  """MNIST's four files, of random 28x28 images and labels: {split: (images, labels)}."""
  rng = np.random.default_rng(seed)
  written = {}
  for split, prefix, n in (('train', 'train', TRAIN), ('test', 't10k', TEST)):
    images, labels = written[split] = _random_split(rng, n, (28, 28, 1))
    for kind, data in (('images-idx3', _idx_images(images)), ('labels-idx1', _idx_labels(labels))):
      path = os.path.join(directory, f'{prefix}-{kind}-ubyte')
      if gz:  # as Debian's: MTIME 0, no file name in the header
        _write(path + '.gz', gzip.compress(data, mtime=0))
      else:
        _write(path, data)
  return written


@pytest.mark.parametrize('gz', [True, False])
@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
def test_idx_files_are_read_as_written(tmp_path, name, gz):
  written = _write_idx(tmp_path, gz=gz)
  for split, (images, labels) in written.items():
    loaded = original_files.load(name, str(tmp_path), split)
    assert loaded.images.shape == (len(labels), 28, 28, 1)
    _assert_split(loaded, images, labels)


def test_gzipped_idx_files_are_read_before_plain_ones(tmp_path):
  gzipped = _write_idx(tmp_path, seed=1, gz=True)
  _write_idx(tmp_path, seed=2, gz=False)
  _assert_split(original_files.load('mnist', str(tmp_path), 'test'), *gzipped['test'])


# ------------------------------------------------------------------------------- CIFAR


class _Python2Pickler(pickle._Pickler):
  """Pickles as Python 2's cPickle wrote the CIFAR files: str and bytes as Python 2's str
  (which encoding='bytes' reads as bytes), numpy under its old name numpy.core."""

  dispatch = dict(pickle._Pickler.dispatch)

  def _save_str(self, obj):
    data = obj.encode('latin1') if isinstance(obj, str) else obj
    self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
    self.memoize(obj)

  dispatch[str] = dispatch[bytes] = _save_str

  def save_global(self, obj, name=None):
    module = obj.__module__.replace('numpy._core', 'numpy.core')
    self.write(pickle.GLOBAL + f'{module}\n{name or obj.__qualname__}\n'.encode())
    self.memoize(obj)


def _python2_pickle(obj) -> bytes:
  out = io.BytesIO()
  _Python2Pickler(out, protocol=2).dump(obj)
  return out.getvalue()


def _cifar_rows(images) -> np.ndarray:
  """[N, 32, 32, 3] -> [N, 3072]: each row the 1024 red, then green, then blue values, row
  by row (the CIFAR page's words, not the reader's reshape)."""
  return np.concatenate([images[..., c].reshape(len(images), 1024) for c in range(3)], axis=1)


def _batch(name, images, labels) -> bytes:
  """A batch file of `name` (cifar10 or cifar100) as its authors pickled it."""
  labels = np.asarray(labels).tolist()  # Python ints
  batch = {'batch_label': 'a batch', 'data': _cifar_rows(images), 'filenames': ['x.png']}
  if name == 'cifar10':
    batch['labels'] = list(labels)
  else:  # coarse labels other than the fine ones: the fine are read
    batch.update(fine_labels=list(labels), coarse_labels=[label // 5 for label in labels])
  return _python2_pickle(batch)


def _tar_info(name, **fields) -> tarfile.TarInfo:
  info = tarfile.TarInfo(name)
  for field, value in fields.items():
    setattr(info, field, value)
  return info


def _write_cifar(root, name='cifar10', layout='tar', **replace) -> tuple[str, dict]:
  """The python version of `name`, of random examples, laid out as `layout`: 'tar' (the
  download), 'folder' (root holds the folder that it extracts to) or 'folder_itself' (root is
  that folder); `replace` replaces the named files' contents (None: leaves the file out).
  (The directory to read, {split: (images, labels)}.)"""
  rng = np.random.default_rng(0)
  written = {
    split: _random_split(rng, n, (32, 32, 3), 10 if name == 'cifar10' else 100)
    for split, n in (('train', TRAIN), ('test', TEST))
  }
  contents = {'readme.html': b'<html></html>', 'batches.meta': b'', 'meta': b'', 'file.txt~': b''}
  if name == 'cifar10':
    n = TRAIN // 5
    for i in range(5):
      contents[f'data_batch_{i + 1}'] = _batch(
        name, *(a[i * n : (i + 1) * n] for a in written['train'])
      )
    contents['test_batch'] = _batch(name, *written['test'])
  else:
    contents.update({split: _batch(name, *arrays) for split, arrays in written.items()})
  contents.update(replace)
  members = CIFAR10_MEMBERS if name == 'cifar10' else CIFAR100_MEMBERS
  members = [member for member in members if contents[member] is not None]
  folder = 'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'
  if layout == 'tar':
    archive = 'cifar-10-python.tar.gz' if name == 'cifar10' else 'cifar-100-python.tar.gz'
    with tarfile.open(os.path.join(root, archive), 'w:gz') as tar:
      tar.addfile(_tar_info(folder, type=tarfile.DIRTYPE))
      for member in members:
        info = _tar_info(f'{folder}/{member}', size=len(contents[member]))
        tar.addfile(info, io.BytesIO(contents[member]))
    return str(root), written
  os.makedirs(os.path.join(root, folder))
  for member in members:
    _write(os.path.join(root, folder, member), contents[member])
  return os.path.join(root, folder) if layout == 'folder_itself' else str(root), written


@pytest.mark.parametrize('layout', ['tar', 'folder', 'folder_itself'])
def test_cifar10_is_read_as_written(tmp_path, layout):
  directory, written = _write_cifar(tmp_path, layout=layout)
  for split, (images, labels) in written.items():
    loaded = original_files.load('cifar10', directory, split)
    assert loaded.images.shape == (len(labels), 32, 32, 3)
    _assert_split(loaded, images, labels)


@pytest.mark.parametrize('layout', ['tar', 'folder'])
def test_cifar10_train_is_its_batches_in_order(tmp_path, layout):
  """data_batch_1 to 5, whatever the order of the archive's members: batch i labelled i."""
  images = np.zeros((TRAIN // 5, 32, 32, 3), np.uint8)
  batches = {f'data_batch_{i}': _batch('cifar10', images, [i] * len(images)) for i in range(1, 6)}
  directory, _ = _write_cifar(tmp_path, layout=layout, **batches)
  labels = original_files.load('cifar10', directory, 'train').labels
  np.testing.assert_array_equal(labels, np.repeat(np.arange(1, 6), TRAIN // 5))


def test_cifar_rows_are_red_green_blue_planes_row_by_row(tmp_path):
  """An image whose red value is its row, green its column, blue constant."""
  rows, columns = np.mgrid[:32, :32].astype(np.uint8)
  row = np.concatenate([rows.ravel(), columns.ravel(), np.full(1024, 200, np.uint8)])
  test_batch = _python2_pickle({'data': row[None], 'labels': [3]})
  directory, _ = _write_cifar(tmp_path, test_batch=test_batch)
  image = original_files.load('cifar10', directory, 'test').images[0]
  np.testing.assert_array_equal(image[..., 0], rows)
  np.testing.assert_array_equal(image[..., 1], columns)
  assert (image[..., 2] == 200).all()


@pytest.mark.parametrize('layout', ['tar', 'folder'])
def test_cifar100_reads_the_fine_labels(tmp_path, layout):
  directory, written = _write_cifar(tmp_path, 'cifar100', layout)
  for split, (images, labels) in written.items():
    _assert_split(original_files.load('cifar100', directory, split), images, labels, 100)


# ------------------------------------------------------------------------------- splits


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
@pytest.mark.parametrize(
  'split, parts',
  [
    ('train[1:3]', [('train', 1, 3)]),
    ('train[50%:]', [('train', TRAIN // 2, TRAIN)]),
    ('train+test', [('train', 0, TRAIN), ('test', 0, TEST)]),
    ('test[-1:]+train[:1]', [('test', TEST - 1, TEST), ('train', 0, 1)]),
  ],
)
def test_split_strings_select_the_numpy_slices(tmp_path, name, split, parts):
  if name == 'mnist':
    directory, written = str(tmp_path), _write_idx(tmp_path)
  else:
    directory, written = _write_cifar(tmp_path)
  expected = [
    np.concatenate([written[part][i][start:stop] for part, start, stop in parts]) for i in (0, 1)
  ]
  _assert_split(original_files.load(name, directory, split), *expected)


# ------------------------------------------------------------------------------- errors


def _mnist(damage=None, split='train'):
  """A case: MNIST's files written gzipped, then `damage(directory)`."""

  def setup(tmp_path):
    _write_idx(tmp_path)
    if damage:
      damage(tmp_path)
    return 'mnist', str(tmp_path), split

  return setup


def _cifar10(damage=None, layout='tar', **replace):
  """A case: CIFAR-10 written as `layout` with files replaced, then `damage(directory)`."""

  def setup(tmp_path):
    directory, _ = _write_cifar(tmp_path, layout=layout, **replace)
    if damage:
      damage(directory)
    return 'cifar10', directory, 'train'

  return setup


def _replaced(file, data: bytes, gz=False):
  return lambda d: _write(os.path.join(d, file), gzip.compress(data, mtime=0) if gz else data)


def _removed(file):
  return lambda directory: os.remove(os.path.join(directory, file))


def _half_of(file):
  def cut(directory):
    with open(os.path.join(directory, file), 'rb') as f:
      data = f.read()
    _write(os.path.join(directory, file), data[: len(data) // 2])

  return cut


def _flipped(file):
  """A byte in the middle of `file` inverted: a gzip CRC or deflate error."""

  def flip(directory):
    with open(os.path.join(directory, file), 'rb') as f:
      data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    _write(os.path.join(directory, file), bytes(data))

  return flip


IMAGES_GZ, LABELS_GZ = 'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'
DOWNLOAD_MNIST = 'download them from https://storage.googleapis.com/cvdf-datasets/mnist/'
AGAIN = 'download it again from http'
ERRORS = {  # case: (setup(tmp_path) -> (name, directory, split), what the message says)
  'unknown name': (
    lambda tmp_path: ('imagenet2012', str(tmp_path), 'train'),
    ["reads mnist, fashion_mnist, cifar10, cifar100, not 'imagenet2012'", "original_dir=''"],
  ),
  'missing directory': (
    lambda tmp_path: ('fashion_mnist', str(tmp_path / 'nowhere'), 'train'),
    ['no directory', 'nowhere', 'apt-get install dataset-fashion-mnist'],
  ),
  'missing file': (
    _mnist(_removed('t10k-labels-idx1-ubyte.gz')),
    ['no t10k-labels-idx1-ubyte[.gz]', DOWNLOAD_MNIST],
  ),
  'truncated idx': (
    _mnist(_replaced(IMAGES_GZ, _idx_images(np.zeros((TRAIN, 28, 28, 1), np.uint8))[:-5], gz=True)),
    [f'{IMAGES_GZ} is damaged', f'{16 + TRAIN * 784 - 5} bytes, not the', AGAIN],
  ),
  'idx header cut short': (
    _mnist(_replaced(LABELS_GZ, b'\x00\x00\x08', gz=True)),
    [f'{LABELS_GZ} is damaged', 'shorter than its IDX header', AGAIN],
  ),
  'wrong magic': (
    _mnist(_replaced(LABELS_GZ, struct.pack('>2I', 2051, TRAIN) + bytes(TRAIN), gz=True)),
    [f'{LABELS_GZ} is damaged', 'magic number is 2051, not 2049', AGAIN],
  ),
  'fewer labels than images': (
    _mnist(_replaced(LABELS_GZ, _idx_labels(np.zeros(TRAIN - 1)), gz=True)),
    [f'holds {TRAIN - 1} labels and', f'{TRAIN} images', 'download both again'],
  ),
  'label over 9': (
    _mnist(_replaced(LABELS_GZ, _idx_labels(np.full(TRAIN, 10)), gz=True)),
    [f'{LABELS_GZ} is damaged', 'a label is 10', AGAIN],
  ),
  'truncated gzip': (
    _mnist(_half_of(IMAGES_GZ)),
    [f'{IMAGES_GZ} is damaged', 'EOFError', AGAIN],
  ),
  'corrupt gzip': (
    _mnist(_flipped(IMAGES_GZ)),
    [f'{IMAGES_GZ} is damaged', AGAIN],
  ),
  'not gzip': (
    _mnist(_replaced(IMAGES_GZ, b'<html>404 Not Found</html>')),
    [f'{IMAGES_GZ} is damaged', 'BadGzipFile', AGAIN],
  ),
  'malformed split': (_mnist(split='train[:50%'), ["malformed split 'train[:50%'"]),
  'unknown split': (_mnist(split='validation'), ["malformed split 'validation'"]),
  'no cifar files': (
    lambda tmp_path: ('cifar10', str(tmp_path), 'train'),
    ['no cifar-10-python.tar.gz, no folder cifar-10-batches-py/', 'www.cs.toronto.edu'],
  ),
  'batch missing from the folder': (
    _cifar10(layout='folder', data_batch_3=None),
    ['cifar-10-batches-py lacks data_batch_3', 'extract cifar-10-python.tar.gz again'],
  ),
  'batch missing from the tar': (
    _cifar10(test_batch=None),
    ['cifar-10-python.tar.gz is damaged', 'no cifar-10-batches-py/test_batch in it', AGAIN],
  ),
  'truncated tar': (
    _cifar10(_half_of('cifar-10-python.tar.gz')),
    ['cifar-10-python.tar.gz is damaged', AGAIN],
  ),
  'not a pickle': (
    _cifar10(data_batch_2=b'\x80\x02garbage'),
    ['cifar-10-batches-py/data_batch_2 is damaged (not a pickle', AGAIN],
  ),
  'pickle of a list': (
    _cifar10(layout='folder', data_batch_2=pickle.dumps([1, 2])),
    ['data_batch_2 is damaged (a pickle of list, not of a dict)', AGAIN],
  ),
  'no labels': (
    _cifar10(data_batch_2=_python2_pickle({'data': np.zeros((2, 3072), np.uint8)})),
    ["data_batch_2 is damaged (no b'labels' of 2 labels in [0, 10)"],
  ),
  'rows not of 3072 values': (
    _cifar10(
      data_batch_2=_python2_pickle({'data': np.zeros((2, 1024), np.uint8), 'labels': [0, 1]})
    ),
    ["b'data' of shape (2, 1024), not [N, 3072]"],
  ),
}


@pytest.mark.parametrize('case', ERRORS)
def test_each_failure_is_a_one_line_config_error_that_says_what_to_do(tmp_path, case):
  setup, fragments = ERRORS[case]
  name, directory, split = setup(tmp_path)
  with pytest.raises(ConfigError) as error:
    original_files.load(name, directory, split)
  message = str(error.value)
  assert '\n' not in message
  for fragment in fragments:
    assert fragment in message


# ------------------------------------------------------------------------------- no TensorFlow

_WITHOUT_TENSORFLOW = textwrap.dedent("""
    import sys
    BLOCKED = ('tensorflow', 'tensorflow_datasets', 'array_record', 'PIL')

    class Blocker:
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
          raise ModuleNotFoundError(f'{name} is blocked', name=name)

    sys.meta_path.insert(0, Blocker())
    from resnet_jax.data import original_files
    for name, directory in zip(('mnist', 'cifar10'), sys.argv[1:], strict=True):
      assert len(original_files.load(name, directory, 'train+test').labels) > 0
    print(sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED))
""")


def test_reads_without_importing_tensorflow(tmp_path):
  os.makedirs(tmp_path / 'mnist')
  _write_idx(tmp_path / 'mnist')
  cifar, _ = _write_cifar(tmp_path)
  result = entry_points.run(f'-c {_WITHOUT_TENSORFLOW}', str(tmp_path / 'mnist'), cifar)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'
