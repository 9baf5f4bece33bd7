"""RandAugment, TrivialAugmentWide and random erasing, as tf functions of (image, seed).

Follows torchvision (transforms.RandAugment, TrivialAugmentWide, RandomErasing): the same
14 operations, magnitude tables (31 bins) and random signs, fill 0 and nearest
interpolation for the geometric ops. The pixel operations follow PIL, which is what
torchvision runs on the PIL images of its recipes: blends truncate to integers,
grayscale is PIL's ITU-R 601 luma, Contrast blends towards the rounded mean luma,
Sharpness towards PIL's SMOOTH filter with the border kept, Equalize is
ImageOps.equalize. Where this differs from torchvision:

- The image is float32 holding integers 0..255 (it is rounded once on the way in, where
  torchvision has uint8), and each operation's output is again integers.
- Nearest-neighbour sampling takes the pixel whose centre is nearest in float32 (TF's
  projective transform); PIL computes the same position in 16.16 fixed point. The two
  can differ where a sample falls (almost) exactly half-way between pixels: a few pixels
  of an image, more at angles like 135 degrees where such ties line up.
- Every random choice is a stateless op seeded per example, so the augmentation is a
  pure function of (run seed, stream position), as everywhere in resnet_jax.data.
"""

import dataclasses

import numpy as np

from resnet_jax.data.options import NUM_BINS
from resnet_jax.data.tf_setup import tf

ERASE_SCALE = (0.02, 0.33)  # torchvision RandomErasing: area fraction of the rectangle
ERASE_RATIO = (0.3, 3.3)  # and its aspect ratio h/w (log-uniform)


@dataclasses.dataclass(frozen=True)
class Policy:
  """RandAugment (num_ops operations of magnitude bin `magnitude`) or TrivialAugmentWide
  (one operation, magnitude bin uniform in 0..30)."""

  name: str  # randaugment | trivialaugment
  num_ops: int = 2
  magnitude: int = 9


# ------------------------------------------------------------------------------ operations
# Each takes a float32 [H, W, C] image of integers 0..255 and a scalar float32 magnitude.


def _transform(image, matrix):
  """Samples input pixel round(M @ (x, y, 1)) for each output pixel (x, y) (column, row),
  nearest neighbour, 0 outside the image."""
  transforms = tf.reshape(tf.concat([tf.cast(matrix, tf.float32), tf.zeros([2])], 0), [1, 8])
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=image[None],
    transforms=transforms,
    output_shape=tf.shape(image)[:2],
    fill_value=0.0,
    interpolation='NEAREST',
    fill_mode='CONSTANT',
  )[0]


def shear_x(image, m):
  """torchvision: affine with shear atan(m) about the top-left corner; input x = x + m * y
  in pixel-centre coordinates, i.e. x + m * (y + 0.5) in pixel indices."""
  return _transform(image, [1.0, m, 0.5 * m, 0.0, 1.0, 0.0])


def shear_y(image, m):
  return _transform(image, [1.0, 0.0, 0.0, m, 1.0, 0.5 * m])


def _int(m):
  """Python's int(): truncates towards 0."""
  return tf.cast(tf.cast(m, tf.int32), tf.float32)


def translate_x(image, m):
  """Moves the content right by int(m) pixels."""
  return _transform(image, [1.0, 0.0, -_int(m), 0.0, 1.0, 0.0])


def translate_y(image, m):
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -_int(m)])


def rotate(image, degrees):
  """Counter-clockwise by `degrees` about the image centre (PIL's Image.rotate)."""
  theta = degrees * (np.pi / 180)
  cos, sin = tf.cos(theta), tf.sin(theta)
  cy, cx = (image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2
  return _transform(
    image, [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy]
  )


def _blend(degenerate, image, m):
  """PIL's Image.blend(degenerate, image, 1 + m) in float32 (extrapolating beyond 1),
  clipped to 0..255 and truncated to an integer. 1 + m is summed in float64, as
  torchvision does in Python, before PIL takes it as a float."""
  factor = tf.cast(1.0 + tf.cast(m, tf.float64), tf.float32)
  return tf.floor(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def grayscale(image):
  """PIL's convert('L'): (19595 R + 38470 G + 7471 B + 2^15) >> 16, exact in float32."""
  if image.shape[-1] == 1:
    return image
  weights = tf.constant([19595.0, 38470.0, 7471.0])
  return tf.floor((tf.reduce_sum(image * weights, -1, keepdims=True) + 32768.0) / 65536.0)


def brightness(image, m):
  return _blend(tf.zeros_like(image), image, m)


def color(image, m):
  """Saturation: blend with the grayscale image (a no-op for one channel)."""
  return _blend(grayscale(image), image, m)


def contrast(image, m):
  """Blend with the mean luma, rounded to an integer (PIL's ImageEnhance.Contrast)."""
  mean = tf.reduce_mean(tf.cast(grayscale(image), tf.float64))
  return _blend(tf.cast(tf.floor(mean + 0.5), tf.float32), image, m)


def sharpness(image, m):
  """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, / 13, rounded), whose
  outermost rows and columns are the image's own."""
  channels = image.shape[-1]
  kernel = np.ones([3, 3, channels, 1], np.float32)
  kernel[1, 1] = 5.0
  smooth = tf.nn.depthwise_conv2d(image[None], kernel / 13, [1, 1, 1, 1], 'VALID')[0]
  inner = tf.pad(tf.round(smooth), [[1, 1], [1, 1], [0, 0]])
  height, width = image.shape[0], image.shape[1]
  border = np.ones([height, width, 1], bool)
  border[1:-1, 1:-1] = False
  return _blend(tf.where(border, image, inner), image, m)


def posterize(image, bits):
  """Keeps the top `bits` bits of each 8-bit value."""
  step = tf.pow(2.0, 8.0 - bits)
  return tf.floor(image / step) * step


def solarize(image, threshold):
  """Inverts the values >= threshold."""
  return tf.where(image >= threshold, 255.0 - image, image)


def autocontrast(image, _=None):
  """Per channel, maps [min, max] to [0, 255] (int(x * scale + offset) as PIL, in float64);
  a constant channel is left alone."""
  x = tf.cast(image, tf.float64)
  low = tf.reduce_min(x, axis=[0, 1])
  high = tf.reduce_max(x, axis=[0, 1])
  flat = high <= low
  one, zero = tf.constant(1.0, tf.float64), tf.constant(0.0, tf.float64)
  scale = tf.where(flat, one, 255.0 / tf.where(flat, one, high - low))
  offset = tf.where(flat, zero, -low * scale)
  return tf.cast(tf.floor(tf.clip_by_value(x * scale + offset, 0.0, 255.0)), tf.float32)


def equalize(image, _=None):
  """PIL's ImageOps.equalize, per channel."""
  channels = tf.unstack(tf.cast(image, tf.int32), axis=-1)
  return tf.cast(tf.stack([_equalize_channel(c) for c in channels], -1), tf.float32)


def _equalize_channel(values):
  """lut[i] = (step // 2 + #values < i) // step, with step = (#values - #values at the
  maximum) // 255; the identity where step is 0 (e.g. a constant channel)."""
  hist = tf.math.bincount(values, minlength=256, maxlength=256)
  step = (tf.size(values) - hist[tf.reduce_max(values)]) // 255
  safe = tf.maximum(step, 1)
  lut = tf.minimum((safe // 2 + tf.cumsum(hist, exclusive=True)) // safe, 255)
  return tf.gather(tf.where(step > 0, lut, tf.range(256)), values)


def identity(image, _=None):
  return image


# ------------------------------------------------------------------------------ policies


def op_table(name: str, height: int, width: int):
  """[(op, magnitudes [NUM_BINS], signed)] in torchvision's order, for one policy."""
  bins = np.linspace(0.0, 1.0, NUM_BINS)
  none = np.zeros(NUM_BINS)
  if name == 'randaugment':
    shear, rotation, enhance = 0.3, 30.0, 0.9
    shift_x, shift_y = 150.0 / 331.0 * width, 150.0 / 331.0 * height
    levels = 4  # posterize: bits 8 down to 4
  else:  # trivialaugment (TrivialAugmentWide)
    shear, rotation, enhance = 0.99, 135.0, 0.99
    shift_x = shift_y = 32.0
    levels = 6  # bits 8 down to 2
  bits = 8 - np.round(np.arange(NUM_BINS) / ((NUM_BINS - 1) / levels))
  return [
    (identity, none, False),
    (shear_x, shear * bins, True),
    (shear_y, shear * bins, True),
    (translate_x, shift_x * bins, True),
    (translate_y, shift_y * bins, True),
    (rotate, rotation * bins, True),
    (brightness, enhance * bins, True),
    (color, enhance * bins, True),
    (contrast, enhance * bins, True),
    (sharpness, enhance * bins, True),
    (posterize, bits, False),
    (solarize, 255.0 * (1 - bins), False),
    (autocontrast, none, False),
    (equalize, none, False),
  ]


def apply_op(image, table, op, magnitude_bin, negate):
  """Operation `op` of `table` at its magnitude `magnitude_bin`, negated if `negate` and
  the operation is signed."""
  ops, magnitudes, signed = zip(*table, strict=True)
  magnitude = tf.gather(tf.constant(np.stack(magnitudes), tf.float32), op)[magnitude_bin]
  sign = tf.where(negate & tf.gather(tf.constant(signed), op), -1.0, 1.0)
  branches = [lambda fn=fn: fn(image, sign * magnitude) for fn in ops]
  return tf.ensure_shape(tf.switch_case(op, branches), image.shape)


def apply(image, seed, policy: Policy):
  """The policy's operations on a float [H, W, C] 0..255 image of static shape; returns
  integers 0..255 as float32."""
  if not image.shape.is_fully_defined():
    raise ValueError(f'augmentation needs a static image shape, not {image.shape}')
  table = op_table(policy.name, image.shape[0], image.shape[1])
  num_ops = policy.num_ops if policy.name == 'randaugment' else 1
  op_seed, sign_seed, bin_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  ops = tf.random.stateless_uniform([num_ops], op_seed, 0, len(table), tf.int32)
  negate = tf.random.stateless_uniform([num_ops], sign_seed) < 0.5
  if policy.name == 'randaugment':
    bins = tf.fill([num_ops], policy.magnitude)
  else:
    bins = tf.random.stateless_uniform([num_ops], bin_seed, 0, NUM_BINS, tf.int32)
  image = tf.round(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0))
  for i in range(num_ops):
    image = apply_op(image, table, ops[i], bins[i], negate[i])
  return image


# ------------------------------------------------------------------------------ erasing


def erasing_box(shape, seed, attempts=10):
  """torchvision RandomErasing's rectangle [y, x, h, w] in an image of `shape` [H, W]:
  the first of `attempts` draws (area fraction uniform in ERASE_SCALE, aspect h/w
  log-uniform in ERASE_RATIO) that fits strictly inside; h = w = 0 if none does."""
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  area_seed, ratio_seed, place_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  area = height * width * tf.random.stateless_uniform([attempts], area_seed, *ERASE_SCALE)
  log_ratio = tf.random.stateless_uniform([attempts], ratio_seed, *np.log(ERASE_RATIO))
  h = tf.round(tf.sqrt(area * tf.exp(log_ratio)))
  w = tf.round(tf.sqrt(area / tf.exp(log_ratio)))
  fits = (h < height) & (w < width)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  found = tf.cast(tf.reduce_any(fits), tf.float32)
  h, w = h[first] * found, w[first] * found
  u = tf.random.stateless_uniform([2], place_seed)
  y, x = tf.floor(u[0] * (height - h + 1)), tf.floor(u[1] * (width - w + 1))
  return tf.cast(tf.stack([y, x, h, w]), tf.int32)


def random_erasing(image, seed, probability: float):
  """With `probability`, sets one random rectangle (erasing_box) of the [H, W, C] image
  to 0 (after normalization: the mean)."""
  apply_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  y, x, h, w = tf.unstack(erasing_box(tf.shape(image)[:2], box_seed))
  erase = (tf.random.stateless_uniform([], apply_seed) < probability) & (h > 0)

  def erased():  # a full-shape mask: TF's CPU kernels broadcast slowly
    height, width, channels = tf.unstack(tf.shape(image))
    hole = tf.zeros([h, w, channels], image.dtype)
    keep = tf.pad(hole, [[y, height - y - h], [x, width - x - w], [0, 0]], constant_values=1)
    return image * keep

  return tf.cond(erase, erased, lambda: image)
