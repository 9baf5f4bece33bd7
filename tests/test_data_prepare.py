"""resnet_jax.data.prepare: Fashion-MNIST offline from Debian's files, ImageNet's manual dir."""

import gzip
import hashlib
import io
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from resnet_jax import data
from resnet_jax.data import prepare, sources
from tests.data_fixtures import data_config, fake_imagenet_manual_dir, take

# TFDS's registered checksum of the original train-labels-idx1-ubyte.gz.
TRAIN_LABELS_SHA256 = 'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845'


def test_restore_gzip_header_reproduces_a_named_gzip():
  payload = bytes(range(256)) * 50
  named = io.BytesIO()
  with gzip.GzipFile('data-idx1-ubyte', 'wb', fileobj=named, mtime=0x59A7E9DE) as f:
    f.write(payload)
  stripped = io.BytesIO()
  with gzip.GzipFile('', 'wb', fileobj=stripped, mtime=0) as f:
    f.write(payload)
  restored = prepare.restore_gzip_header(stripped.getvalue(), 'data-idx1-ubyte', 0x59A7E9DE)
  assert restored == named.getvalue() and gzip.decompress(restored) == payload
  with pytest.raises(ValueError, match='expected a gzip header'):
    prepare.restore_gzip_header(named.getvalue(), 'x', 0)


def test_debian_fashion_mnist_files_become_the_original_downloads(tmp_path):
  assert os.path.isdir(prepare.DEBIAN_FASHION_MNIST), 'apt-get install dataset-fashion-mnist'
  prepare.rebuild_fashion_mnist(prepare.DEBIAN_FASHION_MNIST, str(tmp_path))
  data_bytes = (tmp_path / 'train-labels-idx1-ubyte.gz').read_bytes()
  assert hashlib.sha256(data_bytes).hexdigest() == TRAIN_LABELS_SHA256
  assert sorted(os.listdir(tmp_path)) == sorted(
    f'{p}-{k}-ubyte.gz' for p in ('train', 't10k') for k in ('images-idx3', 'labels-idx1')
  )


@pytest.fixture(scope='module')
def fashion_mnist_dir(tmp_path_factory):
  """Fashion-MNIST prepared offline from /usr/share/datasets/fashion-mnist (~20 s)."""
  assert os.path.isdir(prepare.DEBIAN_FASHION_MNIST), 'apt-get install dataset-fashion-mnist'
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  prepare.prepare('fashion_mnist', data_dir=data_dir)
  return data_dir


def test_fashion_mnist_prepared_offline_has_all_examples(fashion_mnist_dir):
  config = data_config(dataset='fashion_mnist', data_dir=fashion_mnist_dir, image_size=28)
  info = data.get_dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples) == (60_000, 10_000)
  assert (info.num_classes, info.num_channels) == (10, 1)
  for split, per_class in (('train', 6000), ('test', 1000)):
    batches = list(data.create_eval_iterator(config, global_batch_size=8192, split=split))
    labels = np.concatenate([b['label'][b['mask']] for b in batches])
    assert np.bincount(labels).tolist() == [per_class] * 10
  batch = next(data.create_train_iterator(config, global_batch_size=64, seed=0))
  assert batch['image'].shape == (64, 28, 28, 1) and batch['image'].dtype == np.float32


def test_fake_imagenet_goes_through_the_real_builder(tmp_path, monkeypatch):
  manual = fake_imagenet_manual_dir(tmp_path / 'manual')
  data_dir = str(tmp_path / 'tfds')
  assert prepare.main(['imagenet2012', '--manual_dir', manual, '--data_dir', data_dir]) == 0
  config = data_config(
    dataset='imagenet2012',
    data_dir=data_dir,
    preprocess='imagenet',
    image_size=32,
    eval_split='validation',
  )
  info = data.get_dataset_info(config)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (1000, 6, 4)
  evals = list(data.create_eval_iterator(config, global_batch_size=4))
  assert len(evals) == 1 and evals[0]['mask'].all()
  in_memory = take(data.create_train_iterator(config, global_batch_size=4, seed=0), 3)
  assert set(np.concatenate([b['label'] for b in in_memory])) == {0, 1}  # the two synsets
  monkeypatch.setattr(sources, 'MAX_IN_MEMORY_BYTES', 0)  # read by index from array_record
  by_index = take(data.create_train_iterator(config, global_batch_size=4, seed=0), 3)
  for a, b in zip(in_memory, by_index, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_fashion_mnist_without_debian_files_uses_the_tfds_download(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(
    tfds.core.DatasetBuilder,
    'download_and_prepare',
    lambda self, download_config: calls.append((self.name, download_config)),
  )
  prepare.prepare('fashion_mnist', data_dir=str(tmp_path), debian_dir=str(tmp_path / 'absent'))
  [(name, config)] = calls
  assert name == 'fashion_mnist' and config.manual_dir is None and not os.listdir(tmp_path)


def test_imagenet_names_the_missing_tars(tmp_path, capsys):
  (tmp_path / 'ILSVRC2012_img_val.tar').write_bytes(b'')
  assert (
    prepare.main(
      ['imagenet2012', '--manual_dir', str(tmp_path), '--data_dir', str(tmp_path / 'tfds')]
    )
    == 1
  )
  err = capsys.readouterr().err
  assert 'missing ILSVRC2012_img_train.tar in' in err and 'img_val' not in err


def test_prepare_rejects_unknown_names(capsys):
  assert prepare.main(['fashion_mnst']) == 1
  assert 'did you mean fashion_mnist' in capsys.readouterr().err
