"""resnet_jax.data.preprocess: crop windows, 10-crop, normalization, determinism."""

import numpy as np
import pytest

from resnet_jax.data import augment, preprocess
from resnet_jax.data.normalization import normalization_from_images
from resnet_jax.data.tf_setup import tf
from tests.data_fixtures import jpeg_bytes

SHAPE = tf.constant([375, 500, 3])


def _seed(i):
  return tf.constant([7, i], tf.int64)


def test_scale_augmentation_window_matches_shorter_side_256_to_480():
  windows = np.stack(
    [preprocess.scale_augment_window(SHAPE, _seed(i), 224).numpy() for i in range(200)]
  )
  y, x, h, w = windows.T
  assert (h == w).all() and (y >= 0).all() and (x >= 0).all()
  assert (y + h <= 375).all() and (x + w <= 500).all()
  # Crop side in original pixels = 224 * 375 / s for s in [256, 480].
  assert h.min() >= int(224 * 375 / 480) and h.max() <= int(224 * 375 / 256) + 1
  assert h.max() - h.min() > 100  # the scale really varies


def test_inception_window_area_and_aspect():
  windows = np.stack(
    [preprocess.inception_crop_window(SHAPE, _seed(i)).numpy() for i in range(200)]
  )
  y, x, h, w = windows.T
  area = h * w / (375 * 500)
  assert (y + h <= 375).all() and (x + w <= 500).all()
  assert area.min() >= 0.07 and area.max() <= 1.0 and area.max() - area.min() > 0.5


@pytest.mark.parametrize(
  'shape, resized', [((300, 400), (232, 309)), ((401, 300), (310, 232)), ((232, 232), (232, 232))]
)
def test_resized_shape_is_torchvisions(shape, resized):
  """Shorter side to 232, the longer int(232 * long / short): truncated, not rounded."""
  assert tuple(preprocess.resized_shape(tf.constant([*shape, 3]), 232).numpy()) == resized


@pytest.mark.parametrize('height, width', [(300, 401), (401, 300), (250, 251), (90, 120)])
def test_resize_center_crop_from_the_window_is_resize_then_crop(height, width):
  """The eval path decodes only a window, yet gives what resizing the whole image
  (antialiased) and taking torchvision's center crop (offsets rounded half to even) gives."""
  pixels = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
  shape = tf.constant([height, width, 3])
  resized_hw = preprocess.resized_shape(shape, 80).numpy()
  whole = tf.image.resize(pixels.astype(np.float32), resized_hw, antialias=True).numpy()
  top, left = (int(round((n - 64) / 2)) for n in resized_hw)  # Python's round: half to even
  y, x, h, w = preprocess.resize_crop_window(shape, 64, 80).numpy()
  assert h < height or w < width or height < 100  # a window, not the whole image
  ours = preprocess.resize_center_crop(pixels[y : y + h, x : x + w], shape, 64, 80).numpy()
  np.testing.assert_allclose(ours, whole[top : top + 64, left : left + 64], atol=0.02)
  shifted = whole[top + 1 : top + 65, left : left + 64]  # one pixel off: far off
  assert np.abs(ours - shifted).mean() > 5


def test_eval_sizes_and_the_ten_crops_center():
  raw = tf.constant(jpeg_bytes(np.random.default_rng(4), 120, 160))
  norm = preprocess.imagenet_normalization(3)
  run = lambda **kw: preprocess.imagenet_eval(
    raw, encoded=True, channels=3, norm=norm, jpeg_only=True, **kw
  ).numpy()
  one = run(image_size=48, resize_size=64)
  ten = run(image_size=48, resize_size=64, crops=10)
  assert one.shape == (48, 48, 3) and ten.shape == (10, 48, 48, 3)
  np.testing.assert_allclose(ten[4], one, atol=1e-4)  # the same center crop
  assert run(image_size=40).shape == (40, 40, 3)  # resize 0: round(40 * 256 / 224) = 46
  np.testing.assert_allclose(run(image_size=40), run(image_size=40, resize_size=46))
  assert not np.allclose(run(image_size=40), run(image_size=40, resize_size=60), atol=0.1)


def test_imagenet_train_is_a_pure_function_of_the_seed():
  raw = tf.constant(jpeg_bytes(np.random.default_rng(0), 120, 160))
  norm = preprocess.imagenet_normalization(3)
  run = lambda i, pca=0.0: preprocess.imagenet_train(
    raw, _seed(i), encoded=True, channels=3, image_size=64, norm=norm, pca_std=pca, jpeg_only=True
  ).numpy()
  a = run(1)
  assert a.shape == (64, 64, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, run(1))
  assert not np.array_equal(a, run(2))
  shift = (run(1, pca=0.1) - a).reshape(-1, 3)  # PCA lighting: one RGB offset per image
  assert abs(shift).min() > 0 and shift.std(axis=0).max() < 1e-5


def test_png_and_decoded_images_take_the_same_window():
  pixels = np.random.default_rng(1).integers(0, 256, (50, 60, 3), dtype=np.uint8)
  png = tf.io.encode_png(pixels)
  window = lambda shape: tf.stack([5, 7, 20, 30])
  from_png, png_shape = preprocess.decode_window(png, True, 3, window)
  from_array, array_shape = preprocess.decode_window(tf.constant(pixels), False, 3, window)
  np.testing.assert_array_equal(from_png, pixels[5:25, 7:37])
  np.testing.assert_array_equal(from_array, pixels[5:25, 7:37])
  assert list(png_shape.numpy()) == list(array_shape.numpy()) == [50, 60, 3]


def test_ten_crop_corners_center_and_flips():
  image = tf.reshape(tf.range(6 * 8, dtype=tf.float32), [6, 8, 1])
  crops = preprocess.ten_crop(image, 4).numpy()
  full = image.numpy()
  assert crops.shape == (10, 4, 4, 1)
  np.testing.assert_array_equal(crops[0], full[:4, :4])
  np.testing.assert_array_equal(crops[3], full[2:, 4:])
  np.testing.assert_array_equal(crops[4], full[1:5, 2:6])
  np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])


@pytest.mark.parametrize('mode', ['pixel_mean', 'channel'])
def test_normalization_statistics(mode):
  images = np.random.default_rng(2).integers(0, 256, (64, 4, 4, 3), dtype=np.uint8)
  norm = normalization_from_images(images, mode)
  out = preprocess.normalize(tf.constant(images), norm).numpy()
  axes = (0,) if mode == 'pixel_mean' else (0, 1, 2)
  np.testing.assert_allclose(out.mean(axis=axes), 0, atol=1e-4)
  assert norm.mean.shape == ((4, 4, 3) if mode == 'pixel_mean' else (3,))


def _cifar_train_before_augmentation(raw, seed, image_size, norm, padding=4):
  """cifar_train as it was before data.augment and data.random_erasing existed."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = preprocess.normalize(tf.cast(raw, tf.float32), norm)
  image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], crop_seed)
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


def test_train_paths_without_augmentation_are_unchanged_and_with_it_seeded():
  pixels = tf.constant(np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8))
  norm = preprocess.imagenet_normalization(3)
  policy = augment.Policy('randaugment', num_ops=2, magnitude=9)
  run = lambda i, **kw: preprocess.cifar_train(
    pixels, _seed(i), encoded=False, channels=3, image_size=32, norm=norm, **kw
  ).numpy()
  for i in range(4):
    before = _cifar_train_before_augmentation(pixels, _seed(i), 32, norm).numpy()
    np.testing.assert_array_equal(run(i), before)  # bit for bit
  augmented = [run(i, policy=policy, erasing=0.5) for i in range(6)]
  np.testing.assert_array_equal(augmented[0], run(0, policy=policy, erasing=0.5))
  assert sum(not np.array_equal(a, run(i)) for i, a in enumerate(augmented)) >= 5
  erased = [run(i, erasing=1.0) for i in range(6)]  # the normalized image's 0
  assert all((e == 0).all(-1).sum() >= 0.02 * 32 * 32 for e in erased)


def test_imagenet_train_augmentation_is_seeded_and_erases_after_normalization():
  raw = tf.constant(jpeg_bytes(np.random.default_rng(6), 120, 160))
  norm = preprocess.imagenet_normalization(3)
  run = lambda i, **kw: preprocess.imagenet_train(
    raw, _seed(i), encoded=True, channels=3, image_size=48, norm=norm, jpeg_only=True, **kw
  ).numpy()
  policy = augment.Policy('trivialaugment')
  plain = [run(i) for i in range(6)]
  augmented = [run(i, policy=policy) for i in range(6)]
  np.testing.assert_array_equal(augmented[2], run(2, policy=policy))
  assert sum(not np.array_equal(a, p) for a, p in zip(augmented, plain, strict=True)) >= 4
  erased = run(1, erasing=1.0)  # the same crop and flip, then one rectangle of zeros
  zeros = (erased == 0).all(-1)
  assert zeros.sum() >= 0.02 * 48 * 48
  np.testing.assert_array_equal(erased[~zeros], plain[1][~zeros])
