"""data.pipeline='device': a small train split held in accelerator memory, each step's batch
gathered and augmented inside the jitted step; no TensorFlow.

  train = device_data.load_split(config.data, config.data.train_split)  # numpy, uint8
  preprocessing = device_data.Preprocessing.from_config(config.data, train, dtype='bfloat16')
  images, labels = parallel.replicate((train.images, train.labels), mesh)
  # inside the jitted step, `step` traced:
  batch = preprocessing.train_batch(images, labels, step, seed=config.seed, batch_size=B)

The train stream is the concatenation of epochs; epoch e is a permutation of the N
examples drawn from a key of (seed, e) (index_shuffle: of it, only the batch's entries are
computed), and step s is stream positions [s*B, (s+1)*B) (batches straddle epochs; nothing
is dropped), as in the tf.data pipeline. Each example's crop offset and flip are drawn from
a key of (seed, position). So the batch at step s is a pure function of (seed, s, B),
computed where it is used: resume needs only the step. The draws are JAX's (threefry), not
TensorFlow's, so the stream differs from the tf.data pipeline's, with the same
distributions.

The augmentation is the cifar family's (preprocess.cifar_train without RandAugment,
TrivialAugment or random erasing): normalize by the train split's statistics, zero-pad by
data.crop_padding, random crop back to the image size, random horizontal flip. The padding
is 0 after normalization: the mean, not black, as the tf.data path pads. Whatever this
path refuses (check_config, load_split) says to use data.pipeline='tfdata'.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.data import original_files, splits
from resnet_jax.data.normalization import normalization_from_images
from resnet_jax.errors import ConfigError

ORDER_STREAM, AUGMENT_STREAM = 0, 1  # folded into the seed's key: epochs, examples
# index_shuffle's Feistel rounds, each a hash per example: with 4, permutations of 10 examples
# (halves of 2 bits) are visibly biased in 2,000 draws (tests/test_device_data.py), with 6 in
# 100,000; with 8, not in 100,000.
SHUFFLE_ROUNDS = 8
_USE_TFDATA = "use data.pipeline='tfdata'"


def check_config(data_config) -> None:
  """A one-line ConfigError for the first `config.data` value that data.pipeline='device'
  cannot serve, without opening the dataset (load_split checks the dataset itself)."""
  name = data_config.dataset
  if name == splits.SYNTHETIC or name.startswith(splits.FOLDER_PREFIX):
    raise ConfigError(
      f"data.pipeline='device' reads prepared TFDS datasets, not {name!r}: {_USE_TFDATA}"
    )
  refusals = (
    (data_config.preprocess != 'cifar', f'data.preprocess={data_config.preprocess!r}'),
    (data_config.augment != 'none', f'data.augment={data_config.augment!r}'),
    (data_config.random_erasing > 0, f'data.random_erasing={data_config.random_erasing}'),
  )
  for refused, setting in refusals:
    if refused:
      raise ConfigError(
        f"{setting} runs in tf.data only: data.pipeline='device' runs the cifar family's "
        f'crop and flip; {_USE_TFDATA}'
      )
  if data_config.eval_image_size not in (0, data_config.image_size):
    raise ConfigError(
      f"data.eval_image_size={data_config.eval_image_size}: data.pipeline='device' "
      f'evaluates at data.image_size ({data_config.image_size}); set 0 or {_USE_TFDATA}'
    )


def load_split(data_config, split: str) -> splits.InMemorySplit:
  """The split string `split` of data.dataset, decoded: from the dataset's original files
  in data.original_dir (original_files, no TFDS), else from TFDS's prepared files. A
  ConfigError for a split that data.pipeline='device' cannot hold: images other than
  data.image_size square, or empty."""
  if not data_config.original_dir:
    return _load_prepared(data_config, split)
  held = original_files.load(data_config.dataset, data_config.original_dir, split)
  _check_shape(data_config.dataset, held.images.shape[1:], data_config.image_size)
  return held


def _load_prepared(data_config, split: str) -> splits.InMemorySplit:
  """`split` from TFDS's prepared array_record files through its NumPy reader (PNG decoded
  by PIL, no TensorFlow); refused before reading where the images vary in size or the split
  is over splits.MAX_IN_MEMORY_BYTES decoded (the splits the tf.data pipeline too holds
  decoded in host memory; here on every device, replicated)."""
  from resnet_jax.data import tfds_files  # TFDS only where its files are read

  name = data_config.dataset
  meta = tfds_files.prepared(name, split, data_config.data_dir or None)
  if not meta.fixed_shape:
    raise ConfigError(
      f"{name} holds images of varying shape, which data.pipeline='device' does not "
      f'decode: {_USE_TFDATA}'
    )
  _check_shape(name, meta.image_feature.shape, data_config.image_size)
  if meta.memory_bytes > splits.MAX_IN_MEMORY_BYTES:
    raise ConfigError(
      f'{name} {split!r} is {meta.memory_bytes / 2**30:.3g} GiB decoded, over the '
      f"{splits.MAX_IN_MEMORY_BYTES / 2**30:.3g} GiB that data.pipeline='device' holds on "
      f'each device: {_USE_TFDATA}'
    )
  file_format = meta.builder.info.file_format.value
  if file_format != 'array_record':
    raise ConfigError(
      f'{name} is stored as {file_format}, which only TensorFlow reads: re-prepare it '
      f'(python -m resnet_jax.data.prepare {name}) or {_USE_TFDATA}'
    )
  examples = tfds_files.read_all(meta.builder.as_data_source(split))
  image_key, label_key = meta.keys
  images = np.stack([example[image_key] for example in examples])
  labels = np.array([example[label_key] for example in examples], np.int32)
  return splits.InMemorySplit(images, labels, meta.num_classes)


def _check_shape(name: str, shape: tuple, size: int) -> None:
  if tuple(shape[:2]) != (size, size):
    raise ConfigError(
      f"{name} holds images of shape {tuple(shape)}, and data.pipeline='device' neither "
      f'resizes nor crops them to data.image_size={size}: set it to theirs or {_USE_TFDATA}'
    )


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, a static arg
class Preprocessing:
  """The cifar family's preprocessing as pure JAX functions of the split's arrays and a
  batch's step (train) or indices (eval), to run inside jit; cheap: no host round trip."""

  scale: np.ndarray  # x * scale + offset normalizes: [C] or per pixel [H, W, C], float32
  offset: np.ndarray
  padding: int  # data.crop_padding
  flip: bool  # data.random_flip
  dtype: str = 'float32'  # of the images returned

  @classmethod
  def from_config(
    cls, data_config, train: splits.InMemorySplit, dtype='float32'
  ) -> 'Preprocessing':
    """Normalized by the train split's statistics (data.normalize), in train and eval alike,
    as the tf.data pipeline normalizes."""
    scale, offset = normalization_from_images(train.images, data_config.normalize).scale_offset()
    return cls(scale, offset, data_config.crop_padding, data_config.random_flip, dtype)

  def train_batch(self, images, labels, step, *, seed: int, batch_size: int) -> dict:
    """{'image': [B, H, W, C] of self.dtype, 'label': int32 [B]}: stream positions
    [step*B, (step+1)*B), each example cropped and flipped by a key of (seed, position).
    `step` may be traced; positions are int32 (a run may see up to 2**31 examples)."""
    positions = step * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    indices = _example_indices(positions, seed, labels.shape[0])
    keys = jax.vmap(jax.random.fold_in, (None, 0))(_stream_key(seed, AUGMENT_STREAM), positions)
    height, width, channels = images.shape[1:]
    window = 2 * self.padding + 1
    # Per example: crop offsets y, x uniform in [0, 2 * padding], flip with probability 1/2.
    draws = jax.vmap(lambda k: jax.random.randint(k, [3], 0, jnp.array([window, window, 2])))
    y, x, flip = draws(keys).T
    padded = _pad(self._normalize(jnp.take(images, indices, axis=0)), self.padding)
    crop = lambda image, y, x: jax.lax.dynamic_slice(image, (y, x, 0), (height, width, channels))
    image = jax.vmap(crop)(padded, y, x)
    if self.flip:
      image = jnp.where(flip[:, None, None, None] == 1, image[:, :, ::-1], image)
    return {'image': image.astype(self.dtype), 'label': jnp.take(labels, indices)}

  def eval_batch(self, images, labels, indices, mask, *, crops: int = 1) -> dict:
    """{'image', 'label', 'mask'} of the examples `indices` (a row of splits.eval_indices),
    normalized, not augmented; crops=10: the four corners and the center of the padded
    image, then their mirror images, [B, 10, H, W, C] (preprocess.cifar_eval's order)."""
    image = self._normalize(jnp.take(images, indices, axis=0))
    if crops == 10:
      image = _ten_crop(image, self.padding)
    elif crops != 1:
      raise ValueError(f'crops must be 1 or 10, not {crops}')
    return {'image': image.astype(self.dtype), 'label': jnp.take(labels, indices), 'mask': mask}

  def _normalize(self, images):
    return images.astype(jnp.float32) * self.scale + self.offset


def eval_batches(preprocessing, images, labels, *, batch_size, crops=1, sharding=None):
  """Every example of the split once, in order, padded to whole batches of `batch_size`
  (padding rows repeat the last example with mask False), as the tf.data eval iterator
  yields them; each batch is computed on the devices of `images` (laid out as `sharding`),
  by a program compiled once per `preprocessing` object, crops and sharding."""
  indices, mask = splits.eval_indices(labels.shape[0], batch_size, 0, 1)
  for rows, valid in zip(indices, mask, strict=True):
    yield _eval_batch(preprocessing, images, labels, rows, valid, crops=crops, sharding=sharding)


@functools.partial(jax.jit, static_argnums=0, static_argnames=('crops', 'sharding'))
def _eval_batch(preprocessing, images, labels, indices, mask, *, crops, sharding):
  batch = preprocessing.eval_batch(images, labels, indices, mask, crops=crops)
  return batch if sharding is None else jax.lax.with_sharding_constraint(batch, sharding)


def _stream_key(seed: int, stream: int):
  return jax.random.fold_in(jax.random.key(seed), stream)


def _example_indices(positions, seed: int, num_examples: int):
  """The example at each stream position: position p is entry p mod N of epoch p // N's
  permutation, drawn from a key of (seed, epoch) and computed at that entry alone."""
  epoch, offset = jnp.divmod(positions, num_examples)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(_stream_key(seed, ORDER_STREAM), epoch)
  return jax.vmap(index_shuffle, (0, 0, None))(offset, keys, num_examples)


def index_shuffle(index, key, num: int):
  """Entry `index` (int32, in [0, num)) of a pseudo-random permutation of [0, num) drawn from
  `key`, computed alone by a few hashes: a batch costs O(B), where jax.random.permutation
  sorts all `num` keys of each epoch it touches. As TensorFlow's
  tf.random.experimental.index_shuffle and grain's global shuffle do it: a Feistel network,
  a keyed bijection of [0, 2^k) (2^k the smallest power of two >= num), re-applied while the
  result is >= num (cycle-walking: the first value back in [0, num) along the index's cycle,
  so [0, num) maps onto itself; under 2 applications expected, as 2^k < 2 num)."""
  bits = (num - 1).bit_length()

  def feistel_round(r, x):
    # Hashes the low bits (with the round's key) into the high bits, then swaps the halves,
    # so that the next round hashes the half just changed. For odd k the halves alternate
    # between floor(k/2) and ceil(k/2) bits.
    low_bits = jnp.where(r % 2 == 0, bits // 2, bits - bits // 2).astype(jnp.uint32)
    high_bits = bits - low_bits
    low, high = x & ((jnp.uint32(1) << low_bits) - 1), x >> low_bits
    round_key = jax.random.fold_in(key, r)
    hashed = jax.random.bits(jax.random.fold_in(round_key, low), (), jnp.uint32)
    return (low << high_bits) | ((high ^ hashed) & ((jnp.uint32(1) << high_bits) - 1))

  feistel = lambda x: jax.lax.fori_loop(0, SHUFFLE_ROUNDS, feistel_round, x)
  walk = jax.lax.while_loop(lambda x: x >= num, feistel, feistel(jnp.uint32(index)))
  return walk.astype(jnp.int32)


def _ten_crop(images, padding: int):
  """[B, H, W, C] -> [B, 10, H, W, C]: preprocess.ten_crop of the zero-padded images."""
  height, width = images.shape[1:3]
  padded = _pad(images, padding)
  far = 2 * padding
  corners = [(0, 0), (0, far), (far, 0), (far, far), (padding, padding)]
  crops = jnp.stack([padded[:, y : y + height, x : x + width] for y, x in corners], axis=1)
  return jnp.concatenate([crops, crops[:, :, :, ::-1]], axis=1)


def _pad(images, padding: int):
  """Zero rows and columns around [B, H, W, C] images: 0 is the mean once normalized."""
  return jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
