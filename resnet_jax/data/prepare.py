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

Before TFDS downloads anything, each host it would download from (or its proxy) must
accept a connection within CONNECT_TIMEOUT_S: TFDS itself retries an unreachable host
for minutes and then fails with a chain of tracebacks. Files already in the manual dir
or in TFDS's download cache need no host.

Datasets are written as array_record, which the pipeline reads by index when a
split is too large for memory.
"""

import argparse
import os
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import resource as tfds_resource

from resnet_jax.data import tfds_files
from resnet_jax.errors import ConfigError

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
DEBIAN_FASHION_MNIST_PACKAGE = 'dataset-fashion-mnist'
# Original gzip MTIMEs of the upstream Fashion-MNIST files (the FNAME is the name minus .gz).
FASHION_MNIST_MTIME = {'train': 0x59A7E9DE, 't10k': 0x59A7E9F3}
IMAGENET_TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
FILE_FORMAT = 'array_record'
# Seconds a download host (or the proxy to it) has to accept a TCP connection, name lookup
# included.
CONNECT_TIMEOUT_S = 3.0


def restore_gzip_header(data: bytes, file_name: str, mtime: int) -> bytes:
  """Rewrites a gzip member's header with FNAME=file_name and the given MTIME."""
  if data[:3] != b'\x1f\x8b\x08' or data[3] != 0:
    raise ConfigError(f'{file_name}.gz: expected a gzip header without optional fields')
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


def _default_manual_dir(builder: tfds.core.DatasetBuilder) -> str:
  """Where TFDS looks for manually downloaded files when no --manual_dir is given."""
  return os.path.join(builder.data_dir_root, 'downloads', 'manual')


def missing_imagenet_files(manual_dir: str) -> list[str]:
  return [f for f in IMAGENET_TARS if not os.path.isfile(os.path.join(manual_dir, f))]


def pending_downloads(builder: tfds.core.DatasetBuilder, manual_dir: str) -> dict[str, str]:
  """url -> file name of each registered file that TFDS would have to download.

  A file in `manual_dir` or in TFDS's download cache is not downloaded again. A URL without
  a registered file name (ImageNet's tars) is never downloaded: its builder reads the manual
  dir itself.
  """
  download_dir = os.path.join(builder.data_dir_root, 'downloads')
  pending = {}
  for url, info in (builder.url_infos or {}).items():
    if not info.filename or os.path.exists(os.path.join(manual_dir, info.filename)):
      continue
    cached = tfds_resource.get_dl_fname(url, info.checksum)
    # TFDS caches under downloads/<dataset>/, older versions directly under downloads/.
    if not any(os.path.exists(os.path.join(download_dir, d, cached)) for d in (builder.name, '')):
      pending[url] = info.filename
  return pending


def connect_address(url: str) -> tuple[str, int]:
  """The (host, port) that downloading `url` connects to first: the proxy, where one is set."""
  parts = urllib.parse.urlsplit(url)
  proxy = urllib.request.getproxies().get(parts.scheme)
  if proxy and not urllib.request.proxy_bypass(parts.hostname):
    parts = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
  return parts.hostname, parts.port or (443 if parts.scheme == 'https' else 80)


def unreachable(addresses: list[tuple[str, int]], timeout: float) -> dict[tuple[str, int], str]:
  """Each (host, port) that accepts no TCP connection within `timeout` seconds, with why.

  One thread per address, abandoned at the deadline: a name lookup has no timeout of its
  own, and one that gets no answer can take longer than the connection would.
  """
  outcome = {}  # address -> None where reached, else why not
  silent = f'no answer within {timeout:g} s'

  def connect(address):
    try:
      socket.create_connection(address, timeout=timeout).close()
      outcome[address] = None
    except TimeoutError:  # The same as the deadline below, whichever comes first.
      outcome[address] = silent
    except OSError as e:
      outcome[address] = e.strerror or str(e)

  threads = [threading.Thread(target=connect, args=(a,), daemon=True) for a in addresses]
  for thread in threads:
    thread.start()
  deadline = time.monotonic() + timeout
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  why_not = {a: outcome.get(a, silent) for a in addresses}
  return {a: why for a, why in why_not.items() if why is not None}


def check_downloads_reachable(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
  """A ConfigError, saying what to do instead, if a download's host cannot be reached."""
  pending = pending_downloads(builder, manual_dir)
  first_url = {}
  for url in pending:
    first_url.setdefault(connect_address(url), url)
  down = unreachable(list(first_url), CONNECT_TIMEOUT_S)
  if not down:
    return
  (host, port), why = next(iter(down.items()))
  source = urllib.parse.urlsplit(first_url[host, port]).hostname
  via = '' if host == source else f' through the proxy {host}:{port}'
  if builder.name == 'fashion_mnist':
    package = DEBIAN_FASHION_MNIST_PACKAGE
    todo = f"to build it offline, run 'sudo apt-get install {package}' (Debian), then rerun"
  else:
    files = ', '.join(sorted(set(pending.values())))
    todo = f'rerun where it is reachable, or put {files} in {manual_dir} (--manual_dir)'
  raise ConfigError(
    f'{builder.name}: TFDS downloads it from {source}, which cannot be reached{via} ({why}); {todo}'
  )


def prepare(
  name: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  debian_dir: str = DEBIAN_FASHION_MNIST,
) -> tfds.core.DatasetBuilder:
  """Downloads/builds `name` into `data_dir` and returns its builder."""
  builder = tfds_files.tfds_builder(name, data_dir, file_format=FILE_FORMAT)
  if name == 'fashion_mnist' and os.path.isdir(debian_dir):
    with tempfile.TemporaryDirectory() as tmp:
      manual = manual_dir or tmp
      rebuild_fashion_mnist(debian_dir, manual)
      config = tfds.download.DownloadConfig(manual_dir=manual, try_download_gcs=False)
      builder.download_and_prepare(download_config=config)
    return builder
  if name == 'imagenet2012':
    manual_dir = manual_dir or _default_manual_dir(builder)
    missing = missing_imagenet_files(manual_dir)
    if missing:
      raise ConfigError(
        f'imagenet2012: missing {", ".join(missing)} in {manual_dir} '
        '(download them from https://image-net.org, then rerun)'
      )
  if not builder.data_path.exists():  # what download_and_prepare reuses without a download
    check_downloads_reachable(builder, manual_dir or _default_manual_dir(builder))
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
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  splits = ', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())
  print(f'{args.name} prepared in {builder.data_dir} ({splits})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
