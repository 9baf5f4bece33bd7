"""Input pipeline throughput: ImageNet train/eval on generated JPEGs, and CIFAR.

  python -m benchmarks.input_pipeline [--images 512] [--batch 128] [--seconds 10]

Generates ImageNet-like JPEGs (500x375, ~90-100 KB: smooth color fields plus
fine noise, quality 90) as an image folder, runs the real train and eval
pipelines over it (scale augmentation and Inception crop; center crop), and the
CIFAR pipeline on the synthetic source (32x32, pad-crop-flip); then the train
rows again with RandAugment (n=2, m=9), TrivialAugmentWide and random erasing
(p=0.25), with their images/s and CPU time per image as multiples of the same
pipeline's without. Prints a table, then one JSON line. The load average is
printed too: other jobs on the same cores lower images/s roughly in proportion,
CPU time per image much less.
"""

import argparse
import json
import os
import tempfile
import time

import ml_collections
import numpy as np

from resnet_jax import data, defaults
from resnet_jax.data.tf_setup import tf


def make_jpeg(rng: np.random.Generator, height=375, width=500) -> bytes:
  """Smooth color fields plus fine noise, at JPEG quality 90: ~90-100 KB, like ImageNet."""

  def field(h, w, method):
    low = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    return tf.image.resize(low, [height, width], method=method).numpy()

  image = (
    0.6 * field(12, 16, 'bicubic')
    + 0.4 * field(height // 4, width // 4, 'bilinear')
    + rng.normal(0, rng.uniform(12, 16), (height, width, 3))
  )
  return tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90).numpy()


def make_image_folder(root: str, num_images: int, num_files: int, num_classes=8):
  """Writes `num_images` JPEGs once (reused when present) and hard links to them up to
  `num_files` entries, so that an eval pass is long enough to time; returns the file
  paths and the mean size in KB."""
  rng = np.random.default_rng(0)
  unique = os.path.join(root, 'unique')
  os.makedirs(unique, exist_ok=True)
  images = []
  for i in range(num_images):
    path = os.path.join(unique, f'{i:06d}.jpg')
    if not os.path.exists(path):
      with open(path, 'wb') as f:
        f.write(make_jpeg(rng))
    images.append(path)
  paths = []
  for i in range(num_files):
    folder = os.path.join(root, 'folder', f'class_{i % num_classes}')
    path = os.path.join(folder, f'{i:06d}.jpg')
    if not os.path.exists(path):
      os.makedirs(folder, exist_ok=True)
      os.link(images[i % num_images], path)
    paths.append(path)
  return paths, float(np.mean([os.path.getsize(p) for p in images])) / 1000


def plain_train_iterator(paths, batch: int):
  """The reference point of NOTES.md: decode_and_crop_jpeg to a uniform random 224
  window, flip, normalize; AUTOTUNE. Measured alongside to factor out the CPU load."""

  def example(path):
    raw = tf.io.read_file(path)
    shape = tf.image.extract_jpeg_shape(raw)
    y = tf.random.uniform([], 0, shape[0] - 224 + 1, tf.int32)
    x = tf.random.uniform([], 0, shape[1] - 224 + 1, tf.int32)
    image = tf.io.decode_and_crop_jpeg(raw, tf.stack([y, x, 224, 224]), channels=3)
    image = tf.image.random_flip_left_right(image)
    return (tf.cast(image, tf.float32) - 127.5) / 64.0

  ds = tf.data.Dataset.from_tensor_slices(paths).repeat().map(example, tf.data.AUTOTUNE)
  return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


# Train-time augmentations measured against the same pipeline without them (`x plain`).
AUGMENTED = {
  'randaugment': dict(augment='randaugment'),
  'trivialaugment': dict(augment='trivialaugment'),
  'erasing': dict(random_erasing=0.25),
}


def _baseline(name: str) -> str:
  """The row an augmented row is compared with: its name without the augmentation."""
  for suffix in AUGMENTED:
    if name.endswith(f'_{suffix}'):
      return name.removesuffix(f'_{suffix}')
  return name


def _config(dataset, preprocess, image_size, **extra) -> ml_collections.ConfigDict:
  """the defaults' `data` with these fields."""
  config = defaults.get_config().data
  fields = dict(dataset=dataset, train_split='train', eval_split='train', image_size=image_size,
                preprocess=preprocess, data_dir='', **extra)  # fmt: skip
  for name, value in fields.items():
    setattr(config, name, value)
  return config


def _cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


def measure(make_iterator, batch: int, seconds: float, warmup=3) -> tuple[float, float]:
  """(images/s, CPU ms per image) over at least `seconds`, after `warmup` batches.

  Finite iterators are restarted. CPU time is this process's, all threads: unlike
  images/s it hardly changes when other jobs share the cores.
  """
  iterator = make_iterator()
  for _ in range(warmup):
    next(iterator)
  count, start, cpu = 0, time.perf_counter(), _cpu_seconds()
  while time.perf_counter() - start < seconds:
    try:
      next(iterator)
    except StopIteration:
      iterator = make_iterator()
      continue
    count += batch
  wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
  return count / wall, 1000 * cpu / count


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=512, help='distinct JPEGs')
  parser.add_argument('--files', type=int, default=4096, help='folder entries (hard links)')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--dir', default=os.path.join(tempfile.gettempdir(), 'resnet_jax_jpegs'))
  args = parser.parse_args(argv)

  paths, kb = make_image_folder(args.dir, args.images, args.files)
  folder = f'image_folder:{os.path.join(args.dir, "folder")}'
  b = args.batch
  runs = {
    'plain_tf_data_reference': lambda: plain_train_iterator(paths, b),
    'imagenet_train_scale': lambda: data.create_train_iterator(
      _config(folder, 'imagenet', 224, train_crop='scale'), global_batch_size=b, seed=0
    ),
    'imagenet_train_inception': lambda: data.create_train_iterator(
      _config(folder, 'imagenet', 224, train_crop='inception'), global_batch_size=b, seed=0
    ),
    'imagenet_train_scale_bf16': lambda: data.create_train_iterator(
      _config(folder, 'imagenet', 224), global_batch_size=b, seed=0, dtype='bfloat16'
    ),
    'imagenet_eval_center': lambda: data.create_eval_iterator(
      _config(folder, 'imagenet', 224), global_batch_size=b
    ),
    'cifar_train': lambda: data.create_train_iterator(
      _config('synthetic', 'cifar', 32), global_batch_size=b, seed=0
    ),
  }
  for name, extra in AUGMENTED.items():
    runs[f'imagenet_train_scale_{name}'] = lambda extra=extra: data.create_train_iterator(
      _config(folder, 'imagenet', 224, **extra), global_batch_size=b, seed=0
    )
    runs[f'cifar_train_{name}'] = lambda extra=extra: data.create_train_iterator(
      _config('synthetic', 'cifar', 32, **extra), global_batch_size=b, seed=0
    )
  load_before = os.getloadavg()[0]
  results = {name: measure(fn, b, args.seconds) for name, fn in runs.items()}
  load = os.getloadavg()[0]
  print(
    f'{len(os.sched_getaffinity(0))} CPUs, load average {load_before:.2f} before, '
    f'{load:.2f} after; {args.images} JPEGs of {kb:.0f} KB mean ({args.files} files), '
    f'batch {b}'
  )
  speed = {k: results[k][0] / results[_baseline(k)][0] for k in results if k != _baseline(k)}
  cost = {k: results[k][1] / results[_baseline(k)][1] for k in speed}
  print(f'{"pipeline":<40}{"img/s":>10}{"CPU ms/img":>12}{"x img/s":>9}{"x CPU":>7}')
  for name, (rate, cpu_ms) in results.items():
    ratios = f'{speed[name]:>9.2f}{cost[name]:>7.2f}' if name in speed else ''
    print(f'{name:<40}{rate:>10.1f}{cpu_ms:>12.3f}{ratios}')
  print(
    json.dumps(
      {
        'benchmark': 'input_pipeline',
        'jpeg_kb': round(kb, 1),
        'batch': b,
        'img_per_s': {k: round(v[0], 1) for k, v in results.items()},
        'cpu_ms_per_img': {k: round(v[1], 3) for k, v in results.items()},
        'img_per_s_vs_plain': {k: round(v, 3) for k, v in speed.items()},
        'cpu_ms_vs_plain': {k: round(v, 3) for k, v in cost.items()},
        'load_average': [round(load_before, 2), round(load, 2)],
      }
    )
  )


if __name__ == '__main__':
  main()
