"""The ImageNet eval path against torchvision's eval transform, on real photographs.

torchvision's Resize(232, bilinear, antialias=True) + CenterCrop(224) + ToTensor +
Normalize runs on PIL images in a process of its own (tests/torchvision_eval.py:
torchvision next to TensorFlow crashes); ours is preprocess.imagenet_eval with
resize_size=232, image_size=224, on the same encoded bytes. scikit-image's sample photos
are the images. Without torch, torchvision or scikit-image these tests skip, except under
CI=true, where they fail: CI installs requirements-dev.txt.

Measured (2026-12, TF 2.21, Pillow 13, torchvision 0.29): max |ours - theirs| 0.0143 to
0.0174 and mean 0.0039 to 0.0051 in normalized units, i.e. at most one 8-bit level (PIL
rounds to uint8 between and after its two resampling passes, we keep float32). Resizing
to 256 instead gives max >= 2.7, one pixel of crop shift max >= 1.5 and mean >= 0.034,
no antialiasing max >= 0.36 and mean >= 0.018 (the previous eval path, window-first
without antialiasing and TF's fast IDCT: max 0.77 to 2.1, mean 0.032 to 0.075).
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_jax.data import preprocess
from resnet_jax.data.tf_setup import tf

REFERENCE = Path(__file__).with_name('torchvision_eval.py')
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field')
SIZE, RESIZE = 224, 232
# One 8-bit level is 1 / 255 / std = 0.0171 to 0.0175 in normalized units.
MAX_BOUND = 0.03
MEAN_BOUND = 0.008


def _require(*modules: str):
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    message = f'{", ".join(missing)} missing: pip install -r requirements-dev.txt'
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(message)
    pytest.skip(message)


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
  return out.getvalue()


@pytest.fixture(scope='module')
def photos(tmp_path_factory) -> dict[str, tuple[bytes, np.ndarray]]:
  """name -> (encoded bytes, torchvision's output [224, 224, 3]): the photos as JPEG, and
  one turned upright (taller than wide) as PNG."""
  _require('torch', 'torchvision', 'skimage')
  import skimage.data

  encoded = {name: _encode(getattr(skimage.data, name)(), 'JPEG') for name in PHOTOS}
  encoded['rocket_upright_png'] = _encode(skimage.data.rocket().transpose(1, 0, 2), 'PNG')
  folder = tmp_path_factory.mktemp('parity')
  np.savez(folder / 'in.npz', **{k: np.frombuffer(v, np.uint8) for k, v in encoded.items()})
  result = subprocess.run(
    [
      *(sys.executable, str(REFERENCE), f'--inputs={folder / "in.npz"}'),
      *(f'--out={folder / "out.npz"}', f'--size={SIZE}', f'--resize={RESIZE}'),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  reference = np.load(folder / 'out.npz')
  return {name: (raw, reference[name]) for name, raw in encoded.items()}


def _ours(raw: bytes, resize_size=RESIZE) -> np.ndarray:
  norm = preprocess.imagenet_normalization(3)
  image = preprocess.imagenet_eval(
    tf.constant(raw), encoded=True, channels=3, image_size=SIZE, norm=norm, resize_size=resize_size
  )
  return image.numpy()


def _without_antialiasing(raw: bytes) -> np.ndarray:
  """torchvision's geometry, but TF's plain bilinear resize (antialias=False)."""
  image = tf.cast(tf.io.decode_image(raw, channels=3), tf.float32)
  resized_hw = preprocess.resized_shape(tf.shape(image), RESIZE).numpy()
  top, left = (int(round((n - SIZE) / 2)) for n in resized_hw)
  resized = tf.image.resize(image, resized_hw, antialias=False)[
    top : top + SIZE, left : left + SIZE
  ]
  return preprocess.normalize(resized, preprocess.imagenet_normalization(3)).numpy()


def _differences(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
  difference = np.abs(ours - theirs)
  return float(difference.max()), float(difference.mean())


def test_eval_path_matches_torchvisions_eval_transform(photos):
  report = {}
  for name, (raw, theirs) in photos.items():
    ours = _ours(raw)
    assert ours.shape == theirs.shape == (SIZE, SIZE, 3)
    report[name] = _differences(ours, theirs)
  print('max, mean |ours - torchvision| (normalized units):', json.dumps(report))
  for name, (largest, mean) in report.items():
    assert largest < MAX_BOUND and mean < MEAN_BOUND, (name, largest, mean)


def test_the_bounds_catch_a_wrong_resize_crop_or_filter(photos):
  for name, (raw, theirs) in photos.items():
    ours = _ours(raw)
    wrong = {
      'resize 256': _differences(_ours(raw, resize_size=256), theirs),
      'crop one pixel lower': _differences(ours[:-1], theirs[1:]),
      'crop one pixel right': _differences(ours[:, :-1], theirs[:, 1:]),
      'no antialiasing': _differences(_without_antialiasing(raw), theirs),
    }
    for variant, (largest, mean) in wrong.items():  # each fails both bounds, max by 5x
      assert largest > 5 * MAX_BOUND and mean > MEAN_BOUND, (name, variant, largest, mean)
