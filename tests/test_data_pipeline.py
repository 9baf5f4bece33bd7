"""resnet_jax.data.pipeline: batches, determinism, resume, sharding, eval padding, errors."""

import re

import ml_dtypes
import numpy as np
import pytest

from resnet_jax import data
from resnet_jax.data import pipeline, preprocess
from resnet_jax.errors import ConfigError, RunError
from tests.data_fixtures import (
  data_config,
  digest,
  image_folder,
  mock_prepared,
  take,
  tiny_tfds_dataset,
)

IMAGENET_LOW = float((0 - preprocess.IMAGENET_MEAN.max()) / preprocess.IMAGENET_STD.min())
IMAGENET_HIGH = float((255 - preprocess.IMAGENET_MEAN.min()) / preprocess.IMAGENET_STD.min())


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """Prepared TFDS dataset: 30 train / 7 test 8x8x1 images, each distinct."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  name = tiny_tfds_dataset(data_dir)
  return data_config(
    dataset=name,
    data_dir=data_dir,
    image_size=8,
    train_split='train',
    eval_split='test',
    crop_padding=0,
    random_flip=False,
  )


def _index_of(config, split='train'):
  """digest of an unaugmented normalized image -> its index in `split` (eval order)."""
  batches = data.create_eval_iterator(config, global_batch_size=64, split=split)
  images = np.concatenate([b['image'][b['mask']] for b in batches])
  return {digest(image): i for i, image in enumerate(images)}


def _indices(batches, index_of):
  return [[index_of[digest(image)] for image in b['image']] for b in batches]


def test_mock_imagenet_jpeg_train_and_eval_batches(tmp_path):
  config = data_config(dataset='imagenet2012', preprocess='imagenet', image_size=224)
  with mock_prepared('imagenet2012', 6, tmp_path):
    batch = next(data.create_train_iterator(config, global_batch_size=4, seed=0))
    evals = list(data.create_eval_iterator(config, global_batch_size=4))
    ten = next(data.create_eval_iterator(config, global_batch_size=4, crops=10, dtype='bfloat16'))
  assert batch['image'].shape == (4, 224, 224, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32 and set(batch['label']) <= set(range(1000))
  assert IMAGENET_LOW <= batch['image'].min() < -1 and 1 < batch['image'].max() <= IMAGENET_HIGH
  assert [b['image'].shape for b in evals] == [(4, 224, 224, 3)] * 2
  assert np.concatenate([b['mask'] for b in evals]).sum() == 6
  assert ten['image'].shape == (4, 10, 224, 224, 3) and ten['image'].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(ten['image'][:, 9], ten['image'][:, 4, :, ::-1])  # flipped center


def test_mock_cifar10_batches_are_standardized(tmp_path):
  config = data_config(dataset='cifar10')
  with mock_prepared('cifar10', 64, tmp_path):
    batch = next(data.create_train_iterator(config, global_batch_size=32, seed=1, dtype='bfloat16'))
    evals = next(data.create_eval_iterator(config, global_batch_size=64))
    ten = next(data.create_eval_iterator(config, global_batch_size=64, crops=10))
  assert ten['image'].shape == (64, 10, 32, 32, 3)
  np.testing.assert_array_equal(ten['image'][:, 4], evals['image'])  # center of the padded image
  assert batch['image'].shape == (32, 32, 32, 3) and batch['image'].dtype == ml_dtypes.bfloat16
  assert batch['label'].dtype == np.int32 and batch['label'].max() < 10
  image = evals['image']  # per-pixel mean removed, one global std: mean 0, std 1 over the split
  assert abs(image.mean(axis=0)).max() < 1e-4 and 0.95 < image.std() <= 1.0 + 1e-4
  channel = data_config(dataset='cifar10', normalize='channel')
  with mock_prepared('cifar10', 64, tmp_path):
    image = next(data.create_eval_iterator(channel, global_batch_size=64))['image']
  np.testing.assert_allclose(image.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(image.std(axis=(0, 1, 2)), 1, atol=1e-3)


def test_same_seed_same_batches_other_seed_other_batches():
  config = data_config(dataset='synthetic', preprocess='cifar')
  run = lambda seed: take(data.create_train_iterator(config, global_batch_size=8, seed=seed), 3)
  a, b, c = run(0), run(0), run(1)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  assert not np.array_equal(a[0]['image'], c[0]['image'])


def test_epochs_are_reshuffled_permutations(tiny):
  index_of = _index_of(tiny)
  steps = _indices(
    take(data.create_train_iterator(tiny, global_batch_size=10, seed=3), 6), index_of
  )
  epoch0, epoch1 = sum(steps[:3], []), sum(steps[3:], [])
  assert sorted(epoch0) == sorted(epoch1) == list(range(30))
  assert epoch0 != epoch1


def test_start_step_continues_the_same_batches(tiny):
  config = data_config(**{**tiny.to_dict(), 'crop_padding': 2, 'random_flip': True})
  full = take(data.create_train_iterator(config, global_batch_size=4, seed=5), 12)
  resumed = take(data.create_train_iterator(config, global_batch_size=4, seed=5, start_step=7), 5)
  for x, y in zip(full[7:], resumed, strict=True):  # crosses the epoch boundary at step 7.5
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


def test_processes_read_their_rows_of_the_same_global_batches(tiny):
  config = data_config(**{**tiny.to_dict(), 'crop_padding': 2, 'random_flip': True})
  run = lambda process, count: take(
    data.create_train_iterator(
      config, global_batch_size=10, seed=7, process_index=process, process_count=count
    ),
    4,  # 30 examples: crosses the epoch boundary after step 3
  )
  whole, first, second = run(0, 1), run(0, 2), run(1, 2)
  for w, a, b in zip(whole, first, second, strict=True):
    assert a['image'].shape == b['image'].shape == (5, 8, 8, 1)
    for key in ('image', 'label'):  # Same examples, same augmentation, whatever the processes.
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), w[key])


@pytest.mark.parametrize('processes', [1, 2])
def test_eval_sees_every_example_once_with_padding(tiny, processes):
  index_of = _index_of(tiny, 'test')
  seen, counts = [], []
  for process in range(processes):
    batches = list(
      data.create_eval_iterator(
        tiny, global_batch_size=4, process_index=process, process_count=processes
      )
    )
    counts.append(len(batches))
    for b in batches:
      assert b['image'].shape[0] == 4 // processes and b['mask'].dtype == bool
      seen += [index_of[digest(image)] for image in b['image'][b['mask']]]
  assert counts == [2] * processes  # 7 examples, global batch 4: the last one padded
  assert sorted(seen) == list(range(7))


def test_image_folder_pipeline_decodes_jpeg_and_png(tmp_path):
  config = data_config(
    dataset=f'image_folder:{image_folder(tmp_path)}',
    preprocess='imagenet',
    image_size=32,
    eval_split='train',
    train_crop='inception',
  )
  batch = next(data.create_train_iterator(config, global_batch_size=12, seed=0))
  assert batch['image'].shape == (12, 32, 32, 3) and sorted(set(batch['label'])) == [0, 1, 2]
  evals = list(data.create_eval_iterator(config, global_batch_size=5))
  assert [int(b['mask'].sum()) for b in evals] == [5, 5, 2]


def test_unreadable_image_is_named(tmp_path):
  root = image_folder(tmp_path)
  bad = tmp_path / 'dog' / '9.jpg'
  bad.write_bytes(b'not an image at all')
  config = data_config(
    dataset=f'image_folder:{root}', preprocess='imagenet', image_size=16, eval_split='train'
  )
  with pytest.raises(RunError, match=f'unreadable image {bad}'):
    list(data.create_eval_iterator(config, global_batch_size=13))


def test_batch_must_divide_by_devices_and_processes(monkeypatch):
  config = data_config(dataset='synthetic')
  monkeypatch.setattr(pipeline.jax, 'device_count', lambda: 8)
  with pytest.raises(ConfigError, match='global batch size 12 does not divide by the 8 devices'):
    data.create_train_iterator(config, global_batch_size=12, seed=0)
  with pytest.raises(ConfigError, match='16 does not divide by the 3 processes'):
    data.create_eval_iterator(config, global_batch_size=16, process_index=0, process_count=3)


@pytest.mark.parametrize(
  'fields, message',
  [
    ({'preprocess': 'vgg'}, "data.preprocess='vgg': expected one of imagenet, cifar"),
    ({'train_crop': 'center'}, "data.train_crop='center': expected one of scale, inception"),
    ({'normalize': 'zca'}, "data.normalize='zca': expected one of pixel_mean, channel"),
    ({'dataset': ''}, 'data.dataset is empty'),
    ({'image_size': 0}, 'data.image_size=0: expected a positive integer'),
    ({'crop_padding': -1}, 'data.crop_padding=-1: expected >= 0'),
    ({'augment': 'autoaugment'}, "data.augment='autoaugment': expected one of none, randaugment, "),
    ({'randaugment_ops': -1}, 'data.randaugment_ops=-1: expected an integer >= 0'),
    (
      {'randaugment_magnitude': 31},
      'data.randaugment_magnitude=31: expected an integer in [0, 30]',
    ),
    ({'random_erasing': 1.5}, 'data.random_erasing=1.5: expected a probability in [0, 1]'),
    ({'eval_image_size': -224}, 'data.eval_image_size=-224: expected an integer >= 0'),
    ({'eval_resize': 24}, 'data.eval_resize=24: expected 0 or at least the evaluation size 32'),
    (
      {'eval_image_size': 224, 'eval_resize': 200},
      'data.eval_resize=200: expected 0 or at least the evaluation size 224',
    ),
    (
      {'original_dir': '/data/cifar'},
      "data.original_dir='/data/cifar' is read by data.pipeline='device' only",
    ),
  ],
)
def test_check_config_names_the_bad_field(fields, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    data.check_config(data_config(**fields))
  data.check_config(data_config())  # the defaults pass


def test_unknown_split_and_empty_train_split(tiny):
  with pytest.raises(ConfigError, match="unknown or malformed split 'validation'"):
    data.create_eval_iterator(tiny, global_batch_size=8, split='validation')
  with pytest.raises(ConfigError, match='the train split is empty'):
    data.create_train_iterator(
      data_config(dataset='synthetic', train_split='train[:0]'), global_batch_size=8, seed=0
    )


@pytest.mark.parametrize('augment', ['randaugment', 'trivialaugment'])
def test_augmented_train_batches_resume_exactly(augment):
  config = data_config(dataset='synthetic', augment=augment, random_erasing=0.5)
  plain_config = data_config(dataset='synthetic')
  plain = next(data.create_train_iterator(plain_config, global_batch_size=8, seed=2))
  run = lambda **kw: take(data.create_train_iterator(config, global_batch_size=8, seed=2, **kw), 3)
  full, resumed = run(), run(start_step=1)
  for x, y in zip(full[1:], resumed[:2], strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
  np.testing.assert_array_equal(full[0]['label'], plain['label'])  # same examples...
  differs = [
    not np.array_equal(a, b) for a, b in zip(full[0]['image'], plain['image'], strict=True)
  ]
  assert sum(differs) >= 6  # ...augmented


def test_eval_image_size_and_resize(tmp_path):
  folder = data_config(
    dataset=f'image_folder:{image_folder(tmp_path)}',
    preprocess='imagenet',
    image_size=24,
    eval_split='train',
  )
  sized = data_config(**{**folder.to_dict(), 'eval_image_size': 32, 'eval_resize': 40})
  batch = next(data.create_eval_iterator(sized, global_batch_size=4))
  ten = next(data.create_eval_iterator(sized, global_batch_size=4, crops=10))
  assert batch['image'].shape == (4, 32, 32, 3) and ten['image'].shape == (4, 10, 32, 32, 3)
  np.testing.assert_allclose(ten['image'][:, 4], batch['image'], atol=1e-4)
  train = data.create_train_iterator(sized, global_batch_size=4, seed=0)
  assert next(train)['image'].shape == (4, 24, 24, 3)
  wider = data_config(**{**sized.to_dict(), 'eval_resize': 48})
  wider_batch = next(data.create_eval_iterator(wider, global_batch_size=4))
  assert not np.allclose(wider_batch['image'], batch['image'])
  cifar = data_config(dataset='synthetic', eval_image_size=40)  # resized to 40
  image = next(data.create_eval_iterator(cifar, global_batch_size=8))['image']
  assert image.shape == (8, 40, 40, 3)
  ten = next(data.create_eval_iterator(cifar, global_batch_size=8, crops=10))['image']
  np.testing.assert_array_equal(ten[:, 4], image)
