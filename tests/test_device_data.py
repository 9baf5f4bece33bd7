"""resnet_jax.data.device_data: splits loaded without TensorFlow equal the tf.data path's,
the batch of a step is a pure function of (seed, step), epochs are permutations, crops and
flips are drawn as preprocess.cifar_train draws them, eval batches equal tf.data's, the
batch is the same sharded over eight devices, and Debian's Fashion-MNIST files
(data.original_dir) hold the examples of TFDS's prepared split."""

import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import data
from resnet_jax.data import (
  device_data,
  original_files,
  prepare,
  preprocess,
  sources,
  splits,
  tfds_files,
)
from resnet_jax.data.normalization import normalization_from_images
from resnet_jax.data.tf_setup import tf
from resnet_jax.errors import ConfigError
from tests import entry_points
from tests.data_fixtures import data_config, mock_prepared, tiny_tfds_dataset

# Chi-square with 49 degrees of freedom (50 equally likely crops and flips): P(> 85.35) = 0.001.
CHI2_49_P001 = 85.35
# With 81 (a 10x10 table of independent counts, margins fixed): P(> 126.08) = 0.001.
CHI2_81_P001 = 126.08


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """Prepared TFDS dataset (array_record, PNG): 30 train / 7 test 8x8x1 images."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  name = tiny_tfds_dataset(data_dir)
  return data_config(
    dataset=name, data_dir=data_dir, image_size=8, crop_padding=2, pipeline='device'
  )


@pytest.fixture(scope='module')
def fashion_mnist(request):
  """Fashion-MNIST as `make train` prepares it in TFDS's default folder, else the test run's
  (conftest.py's fashion_mnist_tfds)."""
  config = data_config(dataset='fashion_mnist', image_size=28, pipeline='device')
  if not tfds_files.tfds_builder('fashion_mnist', None).info.splits:
    config.data_dir = request.getfixturevalue('fashion_mnist_tfds')
  return config


def _same_as_tfdata(config, split_string):
  """load_split's arrays are those that the tf.data pipeline's in-memory split reads."""
  split = device_data.load_split(config, split_string)
  expected = sources.open_split(config, split_string)
  images, labels = expected.read(tf.range(expected.num_examples, dtype=tf.int64))
  np.testing.assert_array_equal(split.images, images.numpy())
  np.testing.assert_array_equal(split.labels, labels.numpy())
  assert split.labels.dtype == np.int32 and split.num_classes == expected.num_classes
  return split


def test_loaded_splits_equal_the_tfdata_arrays(tiny):
  for split_string in ('train', 'test', 'train[5:20]+test[:3]'):
    _same_as_tfdata(tiny, split_string)
  assert device_data.load_split(tiny, 'train[5:20]+test[:3]').images.shape == (18, 8, 8, 1)


def _eval_batches_equal(config, train, evaluation, *, batch_size, crops=1, dtype='float32'):
  """eval_batches of the loaded splits equal the tf.data eval iterator's batches."""
  preprocessing = device_data.Preprocessing.from_config(config, train, dtype)
  ours = list(
    device_data.eval_batches(
      preprocessing, evaluation.images, evaluation.labels, batch_size=batch_size, crops=crops
    )
  )
  theirs = list(
    data.create_eval_iterator(config, global_batch_size=batch_size, crops=crops, dtype=dtype)
  )
  assert len(ours) == len(theirs)
  # XLA and TF round float32 apart by up to an ulp: in bfloat16, one step of its 8 bits.
  rounding = 2.0**-8 if dtype == 'bfloat16' else 0
  for a, b in zip(ours, theirs, strict=True):
    assert a['image'].dtype == b['image'].dtype and a['image'].shape == b['image'].shape
    images = (np.float32(batch['image']) for batch in (a, b))
    np.testing.assert_allclose(*images, rtol=rounding, atol=1e-6)
    np.testing.assert_array_equal(a['label'], b['label'])
    np.testing.assert_array_equal(a['mask'], b['mask'])


@pytest.mark.parametrize(
  'normalize,crops,dtype',
  [('pixel_mean', 1, 'float32'), ('channel', 1, 'bfloat16'), ('pixel_mean', 10, 'float32')],
)
def test_eval_batches_equal_the_tfdata_eval_batches(tiny, normalize, crops, dtype):
  config = data_config(**{**tiny.to_dict(), 'normalize': normalize})
  train, evaluation = (device_data.load_split(config, s) for s in ('train', 'test'))
  _eval_batches_equal(config, train, evaluation, batch_size=4, crops=crops, dtype=dtype)  # 1 padded


def test_fashion_mnist_splits_and_eval_equal_the_tfdata_path(fashion_mnist):
  """A sixth of the train split (the statistics of the eval batches), the whole test split."""
  config = data_config(**{**fashion_mnist.to_dict(), 'train_split': 'train[50000:]'})
  train, evaluation = (_same_as_tfdata(config, s) for s in ('train[50000:]', 'test'))
  assert (len(train.labels), len(evaluation.labels)) == (10_000, 10_000)
  _eval_batches_equal(config, train, evaluation, batch_size=1536)  # the last one padded


def test_import_and_load_leave_tensorflow_out(tiny):
  """A fresh process: the module, the config check, a split and a batch without
  TensorFlow; the package's tf.data entry points still import it when used."""
  code = textwrap.dedent(f"""
    import sys
    from resnet_jax import data, defaults
    from resnet_jax.data import device_data
    config = defaults.get_config().data
    config.update({{'dataset': {tiny.dataset!r}, 'data_dir': {tiny.data_dir!r}, 'image_size': 8}})
    config.pipeline = 'device'
    data.check_config(config)
    train = device_data.load_split(config, 'train')
    preprocessing = device_data.Preprocessing.from_config(config, train)
    batch = preprocessing.train_batch(train.images, train.labels, 3, seed=0, batch_size=4)
    assert batch['image'].shape == (4, 8, 8, 1), batch['image'].shape
    assert 'tensorflow' not in sys.modules
    data.create_train_iterator
    assert 'tensorflow' in sys.modules
    print('ok')
  """)
  result = entry_points.run(f'-c {code}', timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'


@pytest.mark.parametrize(
  'fields,message',
  [
    ({'pipeline': 'gpu'}, "data.pipeline='gpu': expected one of tfdata, device"),
    ({'dataset': 'synthetic'}, "reads prepared TFDS datasets, not 'synthetic': use data.pipeline"),
    ({'dataset': 'image_folder:/x'}, "not 'image_folder:/x': use data.pipeline='tfdata'"),
    ({'preprocess': 'imagenet'}, "data.preprocess='imagenet' runs in tf.data only"),
    ({'augment': 'randaugment'}, "data.augment='randaugment' runs in tf.data only"),
    ({'random_erasing': 0.25}, 'data.random_erasing=0.25 runs in tf.data only'),
    ({'eval_image_size': 40}, "data.eval_image_size=40: data.pipeline='device' evaluates at "),
  ],
)
def test_settings_it_cannot_serve_are_one_line_errors(fields, message):
  config = data_config(**{'pipeline': 'device', **fields})
  with pytest.raises(ConfigError, match=message) as error:
    data.check_config(config)
  assert '\n' not in str(error.value)
  assert 'tfdata' in str(error.value)


def test_datasets_it_cannot_hold_are_one_line_errors(tiny, tmp_path, monkeypatch):
  empty = data_config(dataset='mnist', data_dir=str(tmp_path / 'none'), image_size=28)
  with pytest.raises(ConfigError) as ours:
    device_data.load_split(empty, 'train')
  with pytest.raises(ConfigError) as theirs:
    sources.open_split(empty, 'train')
  assert str(ours.value) == str(theirs.value) and 'is not prepared' in str(ours.value)
  resized = data_config(**{**tiny.to_dict(), 'image_size': 32})
  with pytest.raises(ConfigError, match=r'images of shape \(8, 8, 1\).*data.image_size=32'):
    device_data.load_split(resized, 'train')
  original = data_config(dataset='fashion_mnist', original_dir=prepare.DEBIAN_FASHION_MNIST)
  with pytest.raises(ConfigError, match=r'images of shape \(28, 28, 1\).*data.image_size=32'):
    device_data.load_split(original, 'test')
  with pytest.raises(ConfigError, match=r"split 'test\[5:5\]' of fashion_mnist is empty"):
    device_data.load_split(data_config(**{**original.to_dict(), 'image_size': 28}), 'test[5:5]')
  for open_split in (device_data.load_split, sources.open_split):  # TFDS cannot open it
    with pytest.raises(ConfigError, match=r"split 'train\[3:3\]' of .* is empty"):
      open_split(tiny, 'train[3:3]')
  with mock_prepared('imagenet2012', 4, tmp_path / 'mock'):
    imagenet = data_config(dataset='imagenet2012', image_size=224)
    with pytest.raises(ConfigError, match=r"varying shape.*data.pipeline='tfdata'"):
      device_data.load_split(imagenet, 'train')
  tfrecord = pytest.raises(ConfigError, match='cifar10 is stored as tfrecord.*re-prepare it')
  with mock_prepared('cifar10', 4, tmp_path / 'mock'), tfrecord:
    device_data.load_split(data_config(dataset='cifar10'), 'train')
  monkeypatch.setattr(splits, 'MAX_IN_MEMORY_BYTES', 29 * 64)
  over = r"'train' is 1.79e-06 GiB decoded, over the 1.73e-06 GiB that data.pipeline='device'"
  with pytest.raises(ConfigError, match=over):
    device_data.load_split(tiny, 'train')
  assert device_data.load_split(tiny, 'train[:29]').images.shape[0] == 29  # 29 * 64 bytes


# ------------------------------------------------------------------------------ train batches


def _indexed_split(num_examples: int) -> splits.InMemorySplit:
  """Images whose pixels are random, labels that are the example's index."""
  images = np.random.default_rng(0).integers(0, 256, (num_examples, 8, 8, 3), np.uint8)
  return splits.InMemorySplit(images, np.arange(num_examples, dtype=np.int32), num_examples)


def _preprocessing(split, **fields) -> device_data.Preprocessing:
  """Normalized per channel (one image's pixel mean would leave it all zeros)."""
  config = data_config(**{'image_size': 8, 'crop_padding': 2, 'normalize': 'channel', **fields})
  return device_data.Preprocessing.from_config(config, split)


def _batches(split, *, seed, batch_size, steps, **fields):
  preprocessing = _preprocessing(split, **fields)
  batch = jax.jit(
    lambda step: preprocessing.train_batch(
      split.images, split.labels, step, seed=seed, batch_size=batch_size
    )
  )
  return [jax.tree.map(np.asarray, batch(step)) for step in steps]


def test_batch_is_a_function_of_seed_and_step():
  split = _indexed_split(30)
  a = _batches(split, seed=0, batch_size=8, steps=[5, 5, 6])
  b = _batches(split, seed=1, batch_size=8, steps=[5])
  np.testing.assert_array_equal(a[0]['image'], a[1]['image'])
  np.testing.assert_array_equal(a[0]['label'], a[1]['label'])
  assert not np.array_equal(a[0]['label'], a[2]['label'])
  assert not np.array_equal(a[0]['label'], b[0]['label'])
  one = _indexed_split(1)  # Every position holds example 0: the augmentation follows the seed.
  a, b = (_batches(one, seed=seed, batch_size=8, steps=[0])[0] for seed in (0, 1))
  assert not np.array_equal(a['image'], b['image'])


def test_resumed_step_equals_the_step_of_a_run_from_zero():
  """A run from step 0 carries its step through a scan, as a training loop does; step 7
  (which straddles the epoch boundary at position 30) computed directly is its 8th batch."""
  split = _indexed_split(30)
  preprocessing = _preprocessing(split)

  def step(carry, _):
    batch = preprocessing.train_batch(split.images, split.labels, carry, seed=3, batch_size=4)
    return carry + 1, batch

  _, run = jax.jit(lambda: jax.lax.scan(step, 0, length=9))()
  resumed = _batches(split, seed=3, batch_size=4, steps=[7, 8])
  for k, batch in zip((7, 8), resumed, strict=True):
    np.testing.assert_array_equal(run['image'][k], batch['image'])
    np.testing.assert_array_equal(run['label'][k], batch['label'])


def test_a_positions_example_and_augmentation_do_not_depend_on_the_batch_size():
  split = _indexed_split(30)
  # 60 positions (two epochs) in batches of 4 and in batches of 6.
  runs = [_batches(split, seed=5, batch_size=b, steps=range(60 // b)) for b in (4, 6)]
  for key in ('image', 'label'):
    by_4, by_6 = (np.concatenate([batch[key] for batch in run]) for run in runs)
    np.testing.assert_array_equal(by_4, by_6)


@pytest.mark.parametrize('batch_size', [4, 64])  # 64 > 30: one batch spans three epochs
def test_each_epoch_visits_every_example_once(batch_size):
  split = _indexed_split(30)
  steps = range(-(-4 * 30 // batch_size))
  labels = np.concatenate(
    [b['label'] for b in _batches(split, seed=2, batch_size=batch_size, steps=steps)]
  )
  epochs = labels[: 4 * 30].reshape(4, 30)
  for epoch in epochs:
    assert sorted(epoch) == list(range(30))
  assert len({tuple(epoch) for epoch in epochs}) == 4


def _shuffled(keys, *nums: int) -> list[np.ndarray]:
  """For each of `nums`, [len(keys), num]: index_shuffle of every index of [0, num) under
  each key, vmapped over (index, key) pairs as _example_indices calls it, all in one program
  (compiling is most of the time)."""

  def shuffled(keys):
    shuffle = jax.vmap(device_data.index_shuffle, (0, 0, None))
    indices = lambda num: jnp.tile(jnp.arange(num), len(keys))
    return [shuffle(indices(num), jnp.repeat(keys, num), num).reshape(-1, num) for num in nums]

  return [np.asarray(permutations) for permutations in jax.jit(shuffled)(keys)]


def test_index_shuffle_is_a_permutation_drawn_from_the_key():
  nums = (1, 2, 3, 7, 1000, 60_000)
  permutations = _shuffled(jax.random.split(jax.random.key(0)), *nums)
  for num, (a, b) in zip(nums, permutations, strict=True):
    for permutation in (a, b):
      np.testing.assert_array_equal(np.sort(permutation), np.arange(num))
    assert num < 7 or not np.array_equal(a, b)


def test_index_shuffle_is_as_random_as_a_uniform_permutation():
  """2000 permutations of 10: each index sends its example to each place equally often, and
  consecutive indices hold consecutive examples as often as in a uniform permutation (1/10).
  Both fail with 4 Feistel rounds, not 8: a network over halves of 2 bits mixes slowly."""
  (permutations,) = _shuffled(jax.random.split(jax.random.key(0), 2000), 10)
  assert len({p.tobytes() for p in permutations}) > 1990  # of 10! = 3.6M
  counts = np.stack([np.bincount(column, minlength=10) for column in permutations.T])
  assert ((counts - 200) ** 2 / 200).sum() < CHI2_81_P001
  successors = (permutations[:, 1:] == permutations[:, :-1] + 1).mean()
  assert abs(successors - 0.1) < 0.009  # 4 standard deviations of the mean of 18,000 pairs


def _outcomes(image, scale, offset, padding):
  """Every crop and flip of `image`: [(2p+1)^2 * 2, H, W, C], in (y, x, flip) order."""
  height, width = image.shape[:2]
  padded = np.pad(image * scale + offset, ((padding, padding), (padding, padding), (0, 0)))
  crops = [
    padded[y : y + height, x : x + width]
    for y in range(2 * padding + 1)
    for x in range(2 * padding + 1)
  ]
  return np.stack([c[:, ::-1] if flip else c for c in crops for flip in (False, True)])


def _outcome_counts(images, outcomes):
  """How often each outcome occurs among `images`, each of which must be one of them."""
  flat, candidates = images.reshape(len(images), -1), outcomes.reshape(len(outcomes), -1)
  distances = (flat**2).sum(1)[:, None] + (candidates**2).sum(1)[None] - 2 * flat @ candidates.T
  assert distances.min(axis=1).max() < 1e-3  # exactly one of them, but for float rounding
  return np.bincount(distances.argmin(axis=1), minlength=len(outcomes))


def test_crops_and_flips_are_uniform_and_those_of_the_tfdata_path():
  """One image, 5000 draws each: the device path's and preprocess.cifar_train's outputs are
  the same 50 images (the same padding value, crop geometry and flip), each equally likely."""
  split = _indexed_split(1)
  norm = normalization_from_images(split.images, 'channel')
  outcomes = _outcomes(split.images[0], *norm.scale_offset(), padding=2)
  assert len({o.tobytes() for o in outcomes}) == 50
  ours = _preprocessing(split).train_batch(split.images, split.labels, 0, seed=4, batch_size=5000)
  augment = lambda i: preprocess.cifar_train(
    tf.constant(split.images[0]),
    tf.stack([tf.constant(4, tf.int64), i]),
    encoded=False,
    channels=3,
    image_size=8,
    norm=norm,
    padding=2,
  )
  theirs = next(iter(tf.data.Dataset.range(5000).map(augment).batch(5000))).numpy()
  for images in (np.asarray(ours['image']), theirs):
    counts = _outcome_counts(images, outcomes)
    assert counts.min() > 0 and ((counts - 100) ** 2 / 100).sum() < CHI2_49_P001
    assert abs(counts[1::2].sum() / 5000 - 0.5) < 0.03  # flipped: odd outcomes
  not_flipped = _batches(split, seed=4, batch_size=500, steps=[0], random_flip=False)[0]['image']
  assert (_outcome_counts(not_flipped, outcomes)[1::2] == 0).all()


_EIGHT_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    from resnet_jax import defaults, parallel
    from resnet_jax.data import device_data, splits
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    split = splits.InMemorySplit(
        rng.integers(0, 256, (50, 8, 8, 3), np.uint8), rng.integers(0, 10, 50, np.int32), 10)
    config = defaults.get_config().data
    config.update({'image_size': 8, 'crop_padding': 2})
    preprocessing = device_data.Preprocessing.from_config(config, split)
    def batch(images, labels, step):
      return preprocessing.train_batch(images, labels, step, seed=1, batch_size=32)
    mesh = parallel.create_mesh()
    images, labels = parallel.replicate((split.images, split.labels), mesh)
    sharded = jax.jit(batch, out_shardings=parallel.batch_sharding(mesh))
    one = jax.jit(batch)
    for step in (0, 1, 7):
      a, b = sharded(images, labels, step), one(split.images, split.labels, step)
      assert len(a['image'].addressable_shards) == 8
      assert a['image'].addressable_shards[0].data.shape == (4, 8, 8, 3)
      for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    kwargs = dict(batch_size=16, crops=10)
    evals = device_data.eval_batches(
      preprocessing, images, labels, sharding=parallel.batch_sharding(mesh), **kwargs)
    for a, b in zip(evals, device_data.eval_batches(preprocessing, split.images, split.labels,
                                                    **kwargs), strict=True):
      assert a['image'].addressable_shards[0].data.shape == (2, 10, 8, 8, 3)
      for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    print('ok')
""")


def test_batches_sharded_over_eight_devices_equal_unsharded():
  result = entry_points.run(
    f'-c {_EIGHT_DEVICES}', env=entry_points.environment(devices=8), timeout=180
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'


def _as_multiset(split) -> np.ndarray:
  """The split's examples (label, then pixels) as sorted byte strings: equal for two splits
  that hold the same examples in any order."""
  rows = np.concatenate(
    [split.labels[:, None].astype(np.uint8), split.images.reshape(len(split.labels), -1)], axis=1
  )
  return np.sort(rows.view(np.dtype((np.void, rows.shape[1]))).ravel())


@pytest.mark.parametrize('split', ['test', 'train'])
def test_debian_fashion_mnist_holds_the_examples_of_tfds(fashion_mnist, split):
  """The examples of TFDS's prepared fashion_mnist, in another order (TFDS shuffles)."""
  assert os.path.isdir(prepare.DEBIAN_FASHION_MNIST), 'apt-get install dataset-fashion-mnist'
  ours = original_files.load('fashion_mnist', prepare.DEBIAN_FASHION_MNIST, split)
  theirs = device_data.load_split(fashion_mnist, split)
  assert ours.images.shape == theirs.images.shape == (len(theirs.labels), 28, 28, 1)
  assert ours.num_classes == theirs.num_classes == 10
  assert not np.array_equal(ours.labels, theirs.labels)
  np.testing.assert_array_equal(_as_multiset(ours), _as_multiset(theirs))
