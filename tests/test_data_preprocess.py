"""resnet_jax.data.preprocess: crop windows, 10-crop, normalization, determinism."""

import numpy as np
import pytest

from resnet_jax.data import preprocess
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


def test_center_crop_window_is_centered():
  y, x, h, w = preprocess.center_crop_window(SHAPE, 224, 256).numpy()
  assert h == w == round(375 * 224 / 256) and abs((y + h / 2) - 187.5) <= 1
  assert abs((x + w / 2) - 250) <= 1


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
  from_png = preprocess.decode_window(png, True, 3, window).numpy()
  from_array = preprocess.decode_window(tf.constant(pixels), False, 3, window).numpy()
  np.testing.assert_array_equal(from_png, pixels[5:25, 7:37])
  np.testing.assert_array_equal(from_array, pixels[5:25, 7:37])


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
  norm = preprocess.normalization_from_images(images, mode)
  out = preprocess.normalize(tf.constant(images), norm).numpy()
  axes = (0,) if mode == 'pixel_mean' else (0, 1, 2)
  np.testing.assert_allclose(out.mean(axis=axes), 0, atol=1e-4)
  assert norm.mean.shape == ((4, 4, 3) if mode == 'pixel_mean' else (3,))
