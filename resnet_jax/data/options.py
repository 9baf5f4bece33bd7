"""The values that config.data may hold, checked before a dataset opens: without
TensorFlow, which a run of data.pipeline='device' never imports."""

from resnet_jax.data import device_data, splits
from resnet_jax.data.normalization import NORMALIZATIONS
from resnet_jax.errors import ConfigError

PIPELINES = ('tfdata', 'device')  # data.pipeline
PREPROCESS = ('imagenet', 'cifar')  # data.preprocess: the augmentation families
TRAIN_CROPS = ('scale', 'inception')  # data.train_crop, the imagenet family's
AUGMENTS = ('none', 'randaugment', 'trivialaugment')  # data.augment
NUM_BINS = 31  # torchvision's num_magnitude_bins: magnitude m indexes 0..30


def check_config(data_config) -> None:
  """A ConfigError for the first `config.data` value that cannot work, without opening the
  dataset (its name and splits are checked when it is opened)."""
  for field, allowed in (
    ('pipeline', PIPELINES),
    ('preprocess', PREPROCESS),
    ('train_crop', TRAIN_CROPS),
    ('normalize', NORMALIZATIONS),
    ('augment', AUGMENTS),
  ):
    if data_config[field] not in allowed:
      raise ConfigError(
        f'data.{field}={data_config[field]!r}: expected one of {", ".join(allowed)}'
      )
  if not data_config.dataset:
    raise ConfigError(
      f"data.dataset is empty: a TFDS name, '{splits.FOLDER_PREFIX}<path>' or '{splits.SYNTHETIC}'"
    )
  if not isinstance(data_config.image_size, int) or data_config.image_size < 1:
    raise ConfigError(f'data.image_size={data_config.image_size!r}: expected a positive integer')
  for field in ('crop_padding', 'pca_lighting'):
    if data_config[field] < 0:
      raise ConfigError(f'data.{field}={data_config[field]}: expected >= 0')
  _check_int(data_config, 'randaugment_ops', 0, None)
  _check_int(data_config, 'randaugment_magnitude', 0, NUM_BINS - 1)
  _check_int(data_config, 'eval_image_size', 0, None)
  _check_int(data_config, 'eval_resize', 0, None)
  erasing = data_config.random_erasing
  if isinstance(erasing, bool) or not isinstance(erasing, int | float) or not 0 <= erasing <= 1:
    raise ConfigError(f'data.random_erasing={erasing!r}: expected a probability in [0, 1]')
  size = eval_size(data_config)
  if 0 < data_config.eval_resize < size:
    raise ConfigError(
      f'data.eval_resize={data_config.eval_resize}: expected 0 or at least the evaluation '
      f'size {size} (data.eval_image_size, else data.image_size)'
    )
  if data_config.pipeline == 'device':
    device_data.check_config(data_config)
  elif data_config.original_dir:
    raise ConfigError(
      f"data.original_dir={data_config.original_dir!r} is read by data.pipeline='device' "
      "only: set that, or data.original_dir='' to read TFDS's prepared files"
    )


def _check_int(data_config, field: str, low: int, high: int | None) -> None:
  value = data_config[field]
  integer = isinstance(value, int) and not isinstance(value, bool)
  if integer and low <= value and (high is None or value <= high):
    return
  allowed = f'in [{low}, {high}]' if high is not None else f'>= {low}'
  raise ConfigError(f'data.{field}={value!r}: expected an integer {allowed}')


def eval_size(data_config) -> int:
  """The evaluation resolution: data.eval_image_size, 0 meaning data.image_size."""
  return data_config.eval_image_size or data_config.image_size
