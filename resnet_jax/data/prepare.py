"""Prepares a TFDS dataset for training, offline where possible.

  python -m resnet_jax.data.prepare NAME [--manual_dir DIR] [--data_dir DIR]

fashion_mnist: built from Debian's `dataset-fashion-mnist` files when present
  (/usr/share/datasets/fashion-mnist). Debian stripped each gzip header's FNAME
  and reset its MTIME, so TFDS's checksums reject the files as they are; the
  deflate streams are intact, and rebuilding the headers reproduces the
  original downloads byte for byte. Without those files: TFDS's own download.
imagenet2012: needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the
  manual dir (default: <data_dir>/downloads/manual); says which are missing.
Anything else: TFDS's normal download_and_prepare.

Datasets are written as array_record, which the pipeline reads by index when a
split is too large for memory.
"""

import argparse
import os
import struct
import sys
import tempfile

import tensorflow_datasets as tfds

from resnet_jax.data import sources

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
# Original gzip MTIMEs of the upstream Fashion-MNIST files (the FNAME is the name minus .gz).
FASHION_MNIST_MTIME = {'train': 0x59A7E9DE, 't10k': 0x59A7E9F3}
IMAGENET_TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
FILE_FORMAT = 'array_record'


def restore_gzip_header(data: bytes, file_name: str, mtime: int) -> bytes:
  """Rewrites a gzip member's header with FNAME=file_name and the given MTIME."""
  if data[:3] != b'\x1f\x8b\x08' or data[3] != 0:
    raise ValueError(f'{file_name}.gz: expected a gzip header without optional fields')
  header = data[:3] + b'\x08' + struct.pack('<I', mtime) + data[8:10]
  return header + file_name.encode() + b'\x00' + data[10:]


def rebuild_fashion_mnist(source_dir: str, manual_dir: str) -> None:
  os.makedirs(manual_dir, exist_ok=True)
  for prefix, mtime in FASHION_MNIST_MTIME.items():
    for kind in ('images-idx3', 'labels-idx1'):
      name = f'{prefix}-{kind}-ubyte'
      with open(os.path.join(source_dir, name + '.gz'), 'rb') as f:
        data = restore_gzip_header(f.read(), name, mtime)
      with open(os.path.join(manual_dir, name + '.gz'), 'wb') as f:
        f.write(data)


def _default_manual_dir(data_dir: str | None) -> str:
  return os.path.join(
    data_dir or os.path.expanduser('~/tensorflow_datasets'), 'downloads', 'manual'
  )


def missing_imagenet_files(manual_dir: str) -> list[str]:
  return [f for f in IMAGENET_TARS if not os.path.isfile(os.path.join(manual_dir, f))]


def prepare(
  name: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  debian_dir: str = DEBIAN_FASHION_MNIST,
) -> tfds.core.DatasetBuilder:
  """Downloads/builds `name` into `data_dir` and returns its builder."""
  builder = sources.tfds_builder(name, data_dir, file_format=FILE_FORMAT)
  if name == 'fashion_mnist' and os.path.isdir(debian_dir):
    with tempfile.TemporaryDirectory() as tmp:
      manual = manual_dir or tmp
      rebuild_fashion_mnist(debian_dir, manual)
      config = tfds.download.DownloadConfig(manual_dir=manual, try_download_gcs=False)
      builder.download_and_prepare(download_config=config)
    return builder
  if name == 'imagenet2012':
    manual_dir = manual_dir or _default_manual_dir(data_dir)
    missing = missing_imagenet_files(manual_dir)
    if missing:
      raise ValueError(
        f'imagenet2012: missing {", ".join(missing)} in {manual_dir} '
        '(download them from https://image-net.org, then rerun)'
      )
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m resnet_jax.data.prepare', description=__doc__.split('\n')[0]
  )
  parser.add_argument('name', help='TFDS dataset name, e.g. fashion_mnist, cifar10, imagenet2012')
  parser.add_argument('--manual_dir', help='folder with manually downloaded files')
  parser.add_argument('--data_dir', help="where prepared datasets live (default: TFDS's own)")
  args = parser.parse_args(argv)
  try:
    builder = prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  splits = ', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())
  print(f'{args.name} prepared in {builder.data_dir} ({splits})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
