"""resnet_jax.data.augment: each operation against PIL (what torchvision runs on PIL images),
magnitudes, RandAugment/TrivialAugment determinism, random erasing."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from resnet_jax.data import augment
from resnet_jax.data.tf_setup import tf

RNG = np.random.default_rng(0)
NOISE = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
# A smooth image with a narrow range, where autocontrast and equalize have work to do.
YY, XX = np.mgrid[0:24, 0:32]
SMOOTH = np.stack([60 + 2 * XX, 80 + 3 * YY, 100 + XX + YY], -1).astype(np.uint8)


def _seed(i):
  return tf.constant([11, i], tf.int64)


def _ours(fn, pixels, magnitude=0.0):
  return fn(tf.constant(pixels, tf.float32), tf.constant(magnitude, tf.float32)).numpy()


def _pil(pixels):
  return Image.fromarray(pixels)


def _affine(matrix):
  """PIL's affine transform with the inverse matrix torchvision's F.affine passes to it."""
  return lambda image: image.transform(image.size, Image.AFFINE, matrix, Image.NEAREST, fillcolor=0)


GEOMETRIC = [
  # torchvision: ShearX is F.affine(shear=[degrees(atan(m)), 0], center=[0, 0]) -> (1, m, 0, ...)
  (augment.shear_x, 0.3, _affine((1, 0.3, 0, 0, 1, 0))),
  (augment.shear_x, -0.27, _affine((1, -0.27, 0, 0, 1, 0))),
  (augment.shear_y, 0.23, _affine((1, 0, 0, 0.23, 1, 0))),
  (augment.translate_x, 7.9, _affine((1, 0, -7, 0, 1, 0))),  # int(7.9) = 7 pixels right
  (augment.translate_y, -5.5, _affine((1, 0, 0, 0, 1, 5))),
  (augment.rotate, 30.0, lambda image: image.rotate(30.0, Image.NEAREST, fillcolor=0)),
  (augment.rotate, -131.0, lambda image: image.rotate(-131.0, Image.NEAREST, fillcolor=0)),
]


@pytest.mark.parametrize('fn, magnitude, reference', GEOMETRIC)
def test_geometric_ops_match_pil(fn, magnitude, reference):
  ours = _ours(fn, NOISE, magnitude)
  theirs = np.asarray(reference(_pil(NOISE)), np.float32)
  # Nearest neighbour may pick the other pixel where a sample falls (within float32
  # rounding) half-way between two: a few pixels at most.
  assert (ours != theirs).any(axis=-1).mean() < 0.02
  assert (ours == 0).all(axis=-1).mean() > 0.05  # the filled area is there


def test_rotate_90_is_a_counter_clockwise_quarter_turn():
  square = NOISE[:, :24]
  np.testing.assert_array_equal(_ours(augment.rotate, square, 90.0), np.rot90(square))


ENHANCE = [
  (augment.brightness, ImageEnhance.Brightness),
  (augment.color, ImageEnhance.Color),
  (augment.contrast, ImageEnhance.Contrast),
  (augment.sharpness, ImageEnhance.Sharpness),
]


@pytest.mark.parametrize('fn, enhancer', ENHANCE)
@pytest.mark.parametrize('magnitude', [-0.9, -0.33, 0.45, 0.99])
def test_enhance_ops_match_pil(fn, enhancer, magnitude):
  for pixels in (NOISE, SMOOTH):
    ours = _ours(fn, pixels, magnitude)
    factor = 1 + float(np.float32(magnitude))  # torchvision: a float32 magnitude, + 1 in Python
    theirs = np.asarray(enhancer(_pil(pixels)).enhance(factor), np.float32)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
  'fn, magnitude, reference',
  [
    (augment.posterize, 4.0, lambda image: ImageOps.posterize(image, 4)),
    (augment.posterize, 2.0, lambda image: ImageOps.posterize(image, 2)),
    (augment.solarize, 127.5, lambda image: ImageOps.solarize(image, 127.5)),
    (augment.solarize, 42.0, lambda image: ImageOps.solarize(image, 42.0)),
    (augment.autocontrast, 0.0, ImageOps.autocontrast),
    (augment.equalize, 0.0, ImageOps.equalize),
  ],
)
def test_pixel_ops_match_pil(fn, magnitude, reference):
  for pixels in (NOISE, SMOOTH, SMOOTH[..., :1]):
    image = _pil(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    theirs = np.asarray(reference(image), np.float32).reshape(pixels.shape)
    np.testing.assert_array_equal(_ours(fn, pixels, magnitude), theirs)
  assert not np.array_equal(_ours(fn, SMOOTH, magnitude), SMOOTH)  # it did something


def test_constant_channel_passes_autocontrast_and_equalize():
  flat = np.full((8, 8, 3), 77, np.uint8)
  for fn in (augment.autocontrast, augment.equalize):
    np.testing.assert_array_equal(_ours(fn, flat), flat)


@pytest.mark.parametrize('policy', ['randaugment', 'trivialaugment'])
def test_magnitude_bins_scale_each_op_and_the_sign_negates(policy):
  table = augment.op_table(policy, 24, 32)
  names = [fn.__name__ for fn, _, _ in table]

  def change(pixels, name, magnitude_bin, negate=False):
    image = tf.constant(pixels, tf.float32)
    op, negate = tf.constant(names.index(name)), tf.constant(negate)
    return augment.apply_op(image, table, op, magnitude_bin, negate) - image

  # Geometric ops on the smooth image (on noise any shift changes everything), the others
  # on noise (where sharpness has edges to work on).
  for pixels, ops in (
    (SMOOTH, ('shear_x', 'shear_y', 'translate_x', 'translate_y', 'rotate')),
    (NOISE, ('brightness', 'color', 'contrast', 'sharpness', 'posterize', 'solarize')),
  ):
    for name in ops:
      sizes = [float(tf.reduce_mean(tf.abs(change(pixels, name, b)))) for b in (0, 10, 20, 30)]
      assert sizes[0] <= sizes[1] < sizes[2] < sizes[3], (name, sizes)
  assert tf.reduce_mean(change(SMOOTH, 'brightness', 30)) > 20  # brighter
  assert tf.reduce_mean(change(SMOOTH, 'brightness', 30, negate=True)) < -20  # darker
  posterize = change(SMOOTH, 'posterize', 30)  # unsigned: the sign is ignored
  np.testing.assert_array_equal(posterize, change(SMOOTH, 'posterize', 30, negate=True))


@pytest.mark.parametrize('name', ['randaugment', 'trivialaugment'])
def test_policies_are_pure_functions_of_the_seed(name):
  policy = augment.Policy(name, num_ops=2, magnitude=15)
  apply = tf.function(lambda seed: augment.apply(tf.constant(SMOOTH, tf.float32), seed, policy))
  outputs = [apply(_seed(i)).numpy() for i in range(8)]
  np.testing.assert_array_equal(outputs[0], apply(_seed(0)).numpy())
  assert len({o.tobytes() for o in outputs}) >= 5  # 14 ops, signs (and TA's magnitudes)
  for out in outputs:
    assert out.shape == SMOOTH.shape and out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(out, np.round(out))


def test_randaugment_magnitude_raises_the_average_change():
  image = tf.constant(SMOOTH, tf.float32)

  def mean_change(magnitude):
    policy = augment.Policy('randaugment', num_ops=2, magnitude=magnitude)
    apply = tf.function(lambda seed: augment.apply(image, seed, policy))
    return np.mean([float(tf.reduce_mean(tf.abs(apply(_seed(i)) - image))) for i in range(40)])

  assert mean_change(2) < mean_change(16) < mean_change(30)


def test_erasing_box_area_aspect_and_placement():
  shape = tf.constant([40, 60])
  box = tf.function(lambda seed: augment.erasing_box(shape, seed))
  boxes = np.stack([box(_seed(i)).numpy() for i in range(300)])
  y, x, h, w = boxes.T
  assert (h > 0).all()  # at these sizes one of the 10 draws always fits
  assert (y >= 0).all() and (x >= 0).all() and (y + h <= 40).all() and (x + w <= 60).all()
  area, aspect = h * w / (40 * 60), h / w
  # Rounding h and w to pixels moves area and aspect a little beyond the drawn ranges.
  assert area.min() > 0.012 and area.max() < 0.36 and area.max() - area.min() > 0.2
  assert 0.25 < aspect.min() < 0.5 and 2.5 < aspect.max() < 4.0
  assert len(set(y)) > 20 and len(set(x)) > 30


def test_random_erasing_probability_and_value():
  image = tf.ones([16, 20, 3])
  erase = tf.function(lambda seed, p: augment.random_erasing(image, seed, p))
  erased = [erase(_seed(i), 0.4).numpy() for i in range(400)]
  hit = [e for e in erased if (e == 0).any()]
  assert 0.32 < len(hit) / len(erased) < 0.48  # 0.4 +- 4 standard deviations
  for e in hit:  # one rectangle of zeros in every channel, the rest untouched
    rows, cols = np.nonzero((e == 0).all(-1))
    assert (e[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] == 0).all()
    assert ((e == 0).sum() // 3) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert set(np.unique(e)) == {0.0, 1.0}
  np.testing.assert_array_equal(erase(_seed(3), 0.4), erased[3])
  assert not any((erase(_seed(i), 0.0).numpy() == 0).any() for i in range(20))
