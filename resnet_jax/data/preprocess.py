"""Per-example decoding and augmentation, as tf functions of (raw image, seed).

Every random choice uses stateless ops seeded per example, so an example's
augmentation depends only on (run seed, its position in the stream): the
parallel map may run examples in any order and the output stays identical.

Families:
  imagenet  train: the paper's scale augmentation (shorter side random in
            [256, 480] scaled by image_size/224, random image_size crop) or an
            Inception-style random-resized crop; flip; optional RandAugment or
            TrivialAugment (augment.py); optional PCA lighting; normalize;
            optional random erasing.
            eval: torchvision's Resize (shorter side to resize_size, bilinear,
            antialiased) + CenterCrop, decoding only the window it reads; or the
            10-crop of the resized image.
  cifar     train: optional RandAugment/TrivialAugment; normalize; pad 4, random
            crop, flip; optional random erasing. eval: the image as is. Normalized
            by the train split's per-pixel mean (the paper) or per-channel
            mean/std. Used for CIFAR, MNIST and Fashion-MNIST alike.
"""

import numpy as np

from resnet_jax.data import augment
from resnet_jax.data.normalization import Normalization
from resnet_jax.data.tf_setup import tf

AUGMENT_STREAM, ERASE_STREAM = 1, 2  # stateless_fold_in keys of the example seed
# libjpeg's accurate integer IDCT, PIL's default: evaluation decodes JPEGs to exactly
# torchvision's pixels, at the speed of TF's default (INTEGER_FAST, kept for training).
EVAL_DCT = 'INTEGER_ACCURATE'

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
# AlexNet's PCA lighting noise: eigenvalues/vectors of the ImageNet RGB covariance (0-255 scale).
PCA_EIGVAL = np.array([55.46, 4.794, 1.148], np.float32)
PCA_EIGVEC = np.array(
  [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], np.float32
)


def imagenet_normalization(channels: int) -> Normalization:
  if channels == 3:
    return Normalization(IMAGENET_MEAN, IMAGENET_STD)
  return Normalization(IMAGENET_MEAN.mean(keepdims=True), IMAGENET_STD.mean(keepdims=True))


def normalize(image, norm: Normalization):
  """(x - mean) / std as x * scale + offset with constants tiled to the full [H, W, C]:
  TF's CPU kernels broadcasting a [C] vector over the last axis cost ~1/3 of the whole
  ImageNet train pipeline; same-shape elementwise ops are nearly free."""
  image = tf.cast(image, tf.float32)
  scale, offset = norm.scale_offset()
  hwc = image.shape[-3:]
  if hwc.is_fully_defined():
    scale = np.broadcast_to(scale, hwc).astype(np.float32)
    offset = np.broadcast_to(offset, hwc).astype(np.float32)
  return image * scale + offset


def _split_seed(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _fold(seed, stream: int):
  """A seed of its own for a later addition (augment, erasing), so that the seeds of the
  older steps, and with them their output, stay what they were."""
  return tf.random.experimental.stateless_fold_in(seed, stream)


def _erase(image, seed, probability: float):
  if probability <= 0:
    return image
  return augment.random_erasing(image, _fold(seed, ERASE_STREAM), probability)


# ------------------------------------------------------------------------------ decoding


def decode_window(raw, encoded: bool, channels: int, window_fn, jpeg_only=False, dct_method=''):
  """Decodes only the crop window `window_fn(shape) -> [y, x, h, w]` of an image; returns
  the window and the whole image's shape [H, W, C].

  JPEG bytes go through decode_and_crop_jpeg (skips decoding outside the window,
  the bulk of the saving); other formats and decoded images are sliced.
  `jpeg_only` (the source promises JPEG) skips the per-image format check.
  `dct_method`: TF's JPEG inverse DCT, '' (INTEGER_FAST) or EVAL_DCT.
  """
  if not encoded:
    shape = tf.shape(raw)
    y, x, h, w = tf.unstack(window_fn(shape))
    return raw[y : y + h, x : x + w], shape

  def jpeg():
    shape = tf.image.extract_jpeg_shape(raw)
    window = tf.io.decode_and_crop_jpeg(raw, window_fn(shape), channels, dct_method=dct_method)
    return window, shape

  def other():
    image = tf.io.decode_image(raw, channels=channels, expand_animations=False)
    shape = tf.shape(image)
    y, x, h, w = tf.unstack(window_fn(shape))
    return image[y : y + h, x : x + w], shape

  return jpeg() if jpeg_only else tf.cond(tf.io.is_jpeg(raw), jpeg, other)


def decode(raw, encoded: bool, channels: int, dct_method=''):
  if not encoded:
    return raw
  if dct_method:
    jpeg = lambda: tf.io.decode_jpeg(raw, channels, dct_method=dct_method)
    other = lambda: tf.io.decode_image(raw, channels, expand_animations=False)
    return tf.cond(tf.io.is_jpeg(raw), jpeg, other)
  return tf.io.decode_image(raw, channels=channels, expand_animations=False)


def _resize(image, size):
  resized = tf.image.resize(image, size, method='bilinear', antialias=False)
  return tf.clip_by_value(resized, 0.0, 255.0)


# ------------------------------------------------------------------------------ imagenet


def scale_augment_window(shape, seed, image_size: int):
  """Window equivalent to: resize the shorter side to s ~ U[256, 480] * image_size/224,
  then take a random image_size square crop (He et al. 2015, sec. 3.4)."""
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale_seed, y_seed, x_seed = _split_seed(seed, 3)
  ratio = image_size / 224
  s = tf.random.stateless_uniform([], scale_seed, 256 * ratio, 480 * ratio)
  side = tf.cast(
    tf.minimum(image_size * tf.minimum(height, width) / s, tf.minimum(height, width)), tf.int32
  )
  y = tf.random.stateless_uniform([], y_seed, 0, shape[0] - side + 1, dtype=tf.int32)
  x = tf.random.stateless_uniform([], x_seed, 0, shape[1] - side + 1, dtype=tf.int32)
  return tf.stack([y, x, side, side])


def inception_crop_window(shape, seed, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3)):
  """Random-resized crop (Szegedy et al.): 8-100% of the area, aspect 3/4-4/3."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    tf.zeros([0, 0, 4], tf.float32),
    seed,
    min_object_covered=0.0,
    aspect_ratio_range=aspect,
    area_range=area,
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def pca_lighting(seed, std: float):
  """AlexNet's lighting noise: an RGB offset along the principal components (0-255 scale)."""
  alpha = tf.random.stateless_normal([3], seed, stddev=std)
  return tf.linalg.matvec(PCA_EIGVEC, alpha * PCA_EIGVAL)


def imagenet_train(
  raw,
  seed,
  *,
  encoded,
  channels,
  image_size,
  norm,
  crop='scale',
  pca_std=0.0,
  flip=True,
  jpeg_only=False,
  policy: augment.Policy | None = None,
  erasing=0.0,
):
  """Crop, resize, flip; then the policy on the 0..255 image, PCA lighting, normalize and
  random erasing (torchvision's order)."""
  crop_seed, flip_seed, light_seed = _split_seed(seed, 3)
  if crop == 'scale':
    window_fn = lambda shape: scale_augment_window(shape, crop_seed, image_size)
  else:  # inception
    window_fn = lambda shape: inception_crop_window(shape, crop_seed)
  image, _ = decode_window(raw, encoded, channels, window_fn, jpeg_only)
  image = _resize(image, [image_size, image_size])
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if policy:
    image = augment.apply(image, _fold(seed, AUGMENT_STREAM), policy)
  if pca_std > 0 and channels == 3:
    image += pca_lighting(light_seed, pca_std)
  return _erase(normalize(image, norm), seed, erasing)


def resized_shape(shape, resize_size: int):
  """torchvision's Resize(resize_size): the shorter side to resize_size, the longer to
  int(resize_size * long / short), truncated."""
  hw = tf.cast(shape[:2], tf.float64)
  shorter = tf.constant(resize_size, tf.float64)
  longer = tf.floor(shorter * tf.reduce_max(hw) / tf.reduce_min(hw))
  resized = tf.where(hw[0] <= hw[1], tf.stack([shorter, longer]), tf.stack([longer, shorter]))
  return tf.cast(resized, tf.int32)


def _resize_antialiased(image, size):
  return tf.image.resize(tf.cast(image, tf.float32), size, method='bilinear', antialias=True)


def _crop_offsets(resized_hw, image_size: int):
  """torchvision CenterCrop's top-left corner: round((size - crop) / 2), half to even."""
  return tf.cast(tf.round(tf.cast(resized_hw - image_size, tf.float64) / 2), tf.int32)


def resize_crop_window(shape, image_size: int, resize_size: int):
  """The window [y, x, h, w] of the original image that Resize(resize_size) +
  CenterCrop(image_size) reads: the crop mapped back, widened by the antialiasing
  filter's reach (max(1, 1/scale) pixels) and one pixel of slack, clipped to the image."""
  hw = tf.cast(shape[:2], tf.float64)
  resized = resized_shape(shape, resize_size)
  scale = tf.cast(resized, tf.float64) / hw
  start = tf.cast(_crop_offsets(resized, image_size), tf.float64) / scale
  reach = tf.maximum(1.0 / scale, 1.0) + 1.0
  first = tf.maximum(tf.floor(start - reach), 0.0)
  last = tf.minimum(tf.math.ceil(start + image_size / scale + reach), hw)
  return tf.cast(tf.concat([first, last - first], 0), tf.int32)


def resize_center_crop(window, shape, image_size: int, resize_size: int):
  """Resize(resize_size, bilinear, antialias=True) + CenterCrop(image_size) as torchvision
  (PIL) does it, computed from the `window` (resize_crop_window) of an image of `shape`:
  the same scale, the same sampling positions and the same triangle filter."""
  resized = resized_shape(shape, resize_size)
  scale = tf.cast(resized, tf.float64) / tf.cast(shape[:2], tf.float64)
  first = tf.cast(resize_crop_window(shape, image_size, resize_size)[:2], tf.float64)
  offsets = tf.cast(_crop_offsets(resized, image_size), tf.float64)
  # Output pixel j (centre j + 0.5) samples window position (j + 0.5 - t) / scale.
  translation = first * scale - offsets
  image = tf.raw_ops.ScaleAndTranslate(
    images=window[None],
    size=[image_size, image_size],
    scale=tf.cast(scale, tf.float32),
    translation=tf.cast(translation, tf.float32),
    kernel_type='triangle',
    antialias=True,
  )
  return image[0]


def ten_crop(image, image_size: int):
  """Four corners and center, and their horizontal flips: [10, size, size, C]."""
  h, w, s = tf.shape(image)[0], tf.shape(image)[1], image_size
  cy, cx = tf.unstack(_crop_offsets(tf.shape(image)[:2], s))
  offsets = [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s), (cy, cx)]
  crops = tf.stack([image[y : y + s, x : x + s] for y, x in offsets])
  crops = tf.ensure_shape(crops, [5, s, s, image.shape[-1]])
  return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def imagenet_eval(
  raw, *, encoded, channels, image_size, norm, resize_size=0, crops=1, jpeg_only=False
):
  """torchvision's eval transform: Resize(resize_size, antialias) + CenterCrop(image_size),
  or TenCrop; [S, S, C], or [10, S, S, C]. resize_size 0: round(image_size * 256 / 224)."""
  resize_size = resize_size or round(image_size * 256 / 224)
  if crops == 1:
    window_fn = lambda shape: resize_crop_window(shape, image_size, resize_size)
    window, shape = decode_window(raw, encoded, channels, window_fn, jpeg_only, EVAL_DCT)
    return normalize(resize_center_crop(window, shape, image_size, resize_size), norm)
  image = decode(raw, encoded, channels, EVAL_DCT)
  image = _resize_antialiased(image, resized_shape(tf.shape(image), resize_size))
  return normalize(ten_crop(image, image_size), norm)


# ------------------------------------------------------------------------------ cifar


def _to_size(raw, encoded, channels, image_size):
  image = tf.cast(decode(raw, encoded, channels), tf.float32)
  if encoded:
    return _resize(image, [image_size, image_size])
  if image.shape[0] != image_size or image.shape[1] != image_size:
    return _resize(image, [image_size, image_size])
  return image


def cifar_train(
  raw,
  seed,
  *,
  encoded,
  channels,
  image_size,
  norm,
  padding=4,
  flip=True,
  policy: augment.Policy | None = None,
  erasing=0.0,
):
  """The policy on the 0..255 image, then normalize, zero-pad (i.e. pad with the mean),
  random crop, flip, random erasing."""
  crop_seed, flip_seed = _split_seed(seed, 2)
  image = _to_size(raw, encoded, channels, image_size)
  if policy:
    image = augment.apply(image, _fold(seed, AUGMENT_STREAM), policy)
  image = normalize(image, norm)
  image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  image = tf.image.stateless_random_crop(image, [image_size, image_size, channels], crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return _erase(image, seed, erasing)


def cifar_eval(raw, *, encoded, channels, image_size, norm, padding=4, crops=1):
  image = normalize(_to_size(raw, encoded, channels, image_size), norm)
  if crops == 1:
    return image
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  return ten_crop(padded, image_size)
