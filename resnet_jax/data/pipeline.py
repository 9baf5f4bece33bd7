"""Train and eval iterators: an index stream -> read -> preprocess -> numpy batches.

The train stream is the concatenation of epochs. Epoch e is a permutation of
the split seeded by (seed, e); global step s is positions [s*B, (s+1)*B) of the
stream, and process p of P owns rows [p*b, (p+1)*b) of it (b = B / P). The
example at a stream position, and its augmentation seed, are pure functions of
(seed, position), so a global batch is the same whatever the number of
processes, and `start_step=k` starts directly at position k*B, yielding exactly
what an uninterrupted run yields from step k on.

Eval pads the split to a whole number of global batches; global batch j holds
examples [j*B, (j+1)*B) in order and process p owns rows [p*b, (p+1)*b) of it.
Padding repeats the last example with mask False.
"""

import jax
import numpy as np

from resnet_jax.data import augment, options, preprocess, sources, splits
from resnet_jax.data.normalization import Normalization, normalization_from_images
from resnet_jax.data.tf_setup import tf
from resnet_jax.errors import ConfigError, RunError


def _policy(data_config) -> augment.Policy | None:
  if data_config.augment == 'none':
    return None
  return augment.Policy(
    data_config.augment, data_config.randaugment_ops, data_config.randaugment_magnitude
  )


def _process(process_index, process_count):
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f'process_index {index} is not in [0, {count})')
  return index, count


def _local_batch(global_batch_size: int, process_count: int) -> int:
  devices = jax.device_count()
  if global_batch_size <= 0 or global_batch_size % devices:
    raise ConfigError(
      f'global batch size {global_batch_size} does not divide by the '
      f'{devices} devices (jax.device_count())'
    )
  if global_batch_size % process_count:
    raise ConfigError(
      f'global batch size {global_batch_size} does not divide by the {process_count} processes'
    )
  return global_batch_size // process_count


def _tf_dtype(dtype) -> tf.DType:
  name = np.dtype(dtype).name
  if name not in ('float32', 'bfloat16', 'float16'):
    raise ValueError(f'unsupported image dtype {name!r}: float32 | bfloat16 | float16')
  return tf.as_dtype(name)


def _normalization(data_config, split: sources.Split, image_size: int):
  """The cifar family normalizes by the train split's statistics when that split sits
  decoded in memory; everything else uses ImageNet's mean/std."""
  if data_config.preprocess != 'cifar':
    return preprocess.imagenet_normalization(split.num_channels)
  train = sources.open_split(data_config, data_config.train_split)
  if train.images is None:
    return preprocess.imagenet_normalization(split.num_channels)
  norm = normalization_from_images(train.images, data_config.normalize)
  if norm.mean.ndim == 3 and norm.mean.shape[0] != image_size:
    mean = tf.image.resize(norm.mean, [image_size, image_size]).numpy()
    norm = Normalization(mean, norm.std)
  return norm


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  options.experimental_optimization.inject_prefetch = True
  options.threading.max_intra_op_parallelism = 1
  return options


def _train_positions(num_examples, global_batch, process_index, process_count, seed, start_step):
  """Dataset of (stream position, example index) of this process's rows from `start_step` on."""
  if num_examples == 0:
    raise ConfigError('the train split is empty: check data.train_split')
  local_batch = global_batch // process_count
  start = start_step * global_batch

  def epoch(e):
    perm = tf.random.experimental.stateless_shuffle(
      tf.range(num_examples, dtype=tf.int64), tf.stack([tf.constant(seed, tf.int64), 2 * e])
    )
    positions = e * num_examples + tf.range(num_examples, dtype=tf.int64)
    mine = (positions % global_batch) // local_batch == process_index
    mine &= positions >= start
    return tf.data.Dataset.from_tensor_slices(
      (tf.boolean_mask(positions, mine), tf.boolean_mask(perm, mine))
    )

  return tf.data.Dataset.range(start // num_examples, 2**62).flat_map(epoch)


def _iterate(ds, split: sources.Split, indices_of_step, start_step=0):
  """Yields numpy batches; a decode failure ends the run with a RunError naming the file."""
  step = start_step
  iterator = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.InvalidArgumentError as e:
      bad = sources.find_unreadable(split, indices_of_step(step))
      if bad:
        raise RunError(f'{bad}: remove or replace it, then rerun the same command') from None
      raise RunError(f'input pipeline failed at step {step}: {e.message}') from e
    yield batch
    step += 1


def create_train_iterator(
  data_config,
  *,
  global_batch_size,
  seed,
  start_step=0,
  dtype='float32',
  process_index=None,
  process_count=None,
):
  """Infinite iterator of {'image': [b, H, W, C], 'label': int32 [b]} for this process."""
  process_index, process_count = _process(process_index, process_count)
  local_batch = _local_batch(global_batch_size, process_count)
  split = sources.open_split(data_config, data_config.train_split)
  image_size = data_config.image_size
  norm = _normalization(data_config, split, image_size)
  kwargs = dict(
    encoded=split.encoded,
    channels=split.num_channels,
    image_size=image_size,
    norm=norm,
    flip=data_config.random_flip,
    policy=_policy(data_config),
    erasing=data_config.random_erasing,
  )
  if data_config.preprocess == 'imagenet':
    kwargs.update(
      crop=data_config.train_crop, jpeg_only=split.jpeg_only, pca_std=data_config.pca_lighting
    )
    augment = preprocess.imagenet_train
  else:
    kwargs.update(padding=data_config.crop_padding)
    augment = preprocess.cifar_train
  seed_key = tf.constant(seed, tf.int64)
  out_dtype = _tf_dtype(dtype)

  def example(position, index):
    raw, label = split.read(index)
    aug_seed = tf.stack([seed_key, 2 * position + 1])
    return {'image': tf.cast(augment(raw, aug_seed, **kwargs), out_dtype), 'label': label}

  def positions(step):
    return _train_positions(
      split.num_examples, global_batch_size, process_index, process_count, seed, step
    )

  ds = positions(start_step)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())

  def indices_of_step(step):
    head = positions(step).take(local_batch)
    return [int(i) for _, i in head.as_numpy_iterator()]

  return _iterate(ds, split, indices_of_step, start_step)


def create_eval_iterator(
  data_config,
  *,
  global_batch_size,
  split=None,
  crops=1,
  dtype='float32',
  process_index=None,
  process_count=None,
):
  """Finite iterator of {'image', 'label', 'mask'}: every example once, padding masked."""
  if crops not in (1, 10):
    raise ValueError(f'crops must be 1 or 10, not {crops}')
  process_index, process_count = _process(process_index, process_count)
  _local_batch(global_batch_size, process_count)
  source = sources.open_split(data_config, split or data_config.eval_split)
  image_size = options.eval_size(data_config)
  kwargs = dict(
    encoded=source.encoded,
    channels=source.num_channels,
    image_size=image_size,
    norm=_normalization(data_config, source, image_size),
    crops=crops,
  )
  if data_config.preprocess == 'imagenet':
    kwargs.update(jpeg_only=source.jpeg_only, resize_size=data_config.eval_resize)
    transform = preprocess.imagenet_eval
  else:
    kwargs.update(padding=data_config.crop_padding)
    transform = preprocess.cifar_eval
  out_dtype = _tf_dtype(dtype)
  indices, mask = splits.eval_indices(
    source.num_examples, global_batch_size, process_index, process_count
  )

  def example(index, valid):
    raw, label = source.read(index)
    image = tf.cast(transform(raw, **kwargs), out_dtype)
    return {'image': image, 'label': label, 'mask': valid}

  ds = tf.data.Dataset.from_tensor_slices((indices.reshape(-1), mask.reshape(-1)))
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(indices.shape[1]).prefetch(tf.data.AUTOTUNE).with_options(_options())
  return _iterate(ds, source, lambda step: indices[step])
