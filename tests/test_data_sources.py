"""resnet_jax.data.sources: TFDS, image folders, synthetic; info and the error lines."""

import numpy as np
import pytest

from resnet_jax import data
from resnet_jax.data import sources
from resnet_jax.data.tf_setup import tf
from tests.data_fixtures import data_config, image_folder, mock_prepared, tiny_tfds_dataset


def _read(split, index):
  image, label = split.read(tf.constant(index, tf.int64))
  return image.numpy(), int(label)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return data_config(dataset=tiny_tfds_dataset(data_dir), data_dir=data_dir, image_size=8)


def test_tfds_info_and_split_slicing(tiny):
  info = data.get_dataset_info(tiny)
  assert info == data.DatasetInfo(
    num_classes=3, num_channels=1, image_size=8, num_train_examples=30, num_eval_examples=7
  )
  split = sources.open_split(tiny, 'train[10:20]+test[:2]')
  assert split.num_examples == 12 and not split.encoded
  assert [int(_read(split, i)[0][0, 0, 0]) for i in (0, 9, 10, 11)] == [10, 19, 0, 1]


def test_large_split_is_read_by_index_from_array_record(tiny, monkeypatch):
  in_memory = sources.open_split(tiny, 'train')
  monkeypatch.setattr(sources, 'MAX_IN_MEMORY_BYTES', 0)
  by_index = sources.open_split(tiny, 'train')
  assert by_index.encoded and by_index.num_examples == 30
  for i in (0, 17, 29):
    raw, label = _read(by_index, i)
    decoded = tf.io.decode_png(raw, channels=1).numpy()
    np.testing.assert_array_equal(decoded, _read(in_memory, i)[0])
    assert label == i % 3


def test_synthetic_shapes_follow_image_size():
  small = data.get_dataset_info(data_config(dataset='synthetic', image_size=32))
  large = data.get_dataset_info(data_config(dataset='synthetic', image_size=224))
  assert (small.num_classes, small.num_channels, small.num_train_examples) == (10, 3, 50_000)
  assert (large.num_classes, large.num_train_examples, large.num_eval_examples) == (
    1000,
    1_281_167,
    50_000,
  )
  split = sources.open_split(data_config(dataset='synthetic', image_size=224), 'train[:8]')
  image, label = _read(split, 3)
  assert image.shape == (224, 224, 3) and image.dtype == np.uint8 and 0 <= label < 1000
  np.testing.assert_array_equal(image, _read(split, 3)[0])
  assert not np.array_equal(image, _read(split, 4)[0])


def test_image_folder_labels_are_sorted_class_names(tmp_path):
  root = image_folder(tmp_path, classes=('zebra', 'ant', 'moth'), per_class=2)
  config = data_config(dataset=f'image_folder:{root}', image_size=32)
  split = sources.open_split(config, 'train')
  assert (split.num_examples, split.num_classes, split.encoded) == (6, 3, True)
  assert [_read(split, i)[1] for i in range(6)] == [0, 0, 1, 1, 2, 2]  # ant, moth, zebra
  assert not split.jpeg_only  # image_folder() writes one PNG
  assert sources.open_split(config, 'train[:50%]').num_examples == 3


def test_image_folder_split_subfolders(tmp_path):
  image_folder(tmp_path / 'train', per_class=3)
  image_folder(tmp_path / 'val', per_class=1)
  config = data_config(dataset=f'image_folder:{tmp_path}', eval_split='val')
  info = data.get_dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples, info.num_classes) == (9, 3, 3)


def test_unknown_dataset_suggests_close_names():
  with pytest.raises(ValueError, match="unknown dataset 'cifar01'; did you mean cifar10"):
    data.get_dataset_info(data_config(dataset='cifar01'))
  with pytest.raises(ValueError, match='did you mean synthetic'):
    data.get_dataset_info(data_config(dataset='synthetc'))


def test_unprepared_dataset_prints_the_prepare_command(tmp_path):
  config = data_config(dataset='mnist', data_dir=str(tmp_path))
  command = f'run: python -m resnet_jax.data.prepare mnist --data_dir {tmp_path}$'
  with pytest.raises(ValueError, match=command):
    data.get_dataset_info(config)


def test_empty_or_imageless_folder_and_unknown_split(tmp_path):
  with pytest.raises(ValueError, match='is empty: it needs one subfolder of images per class'):
    sources.open_split(data_config(dataset=f'image_folder:{tmp_path}'), 'train')
  (tmp_path / 'cat').mkdir()
  (tmp_path / 'cat' / 'notes.txt').write_text('no images here')
  with pytest.raises(ValueError, match='has no images'):
    sources.open_split(data_config(dataset=f'image_folder:{tmp_path}'), 'train')
  with pytest.raises(ValueError, match="unknown or malformed split 'test'"):
    sources.open_split(data_config(dataset=f'image_folder:{tmp_path}'), 'test')
  with pytest.raises(ValueError, match='does not exist'):
    sources.open_split(data_config(dataset=f'image_folder:{tmp_path}/nope'), 'train')


def test_a_split_is_not_served_from_another_folders_cache(tmp_path):
  config = data_config(dataset='cifar10')
  with mock_prepared('cifar10', 5, tmp_path / 'a'):
    assert data.get_dataset_info(config).num_train_examples == 5
  with mock_prepared('cifar10', 9, tmp_path / 'b'):
    assert data.get_dataset_info(config).num_train_examples == 9
