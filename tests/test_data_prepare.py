"""resnet_jax.data.prepare: Fashion-MNIST offline from Debian's files, ImageNet's manual dir,
a download that cannot be reached; and tools/install_system_packages.sh, `make train`'s set-up.

The network is never used: a download's host is reached through a proxy on a local port that
answers, refuses, or never answers.
"""

import gzip
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import resource as tfds_resource

from resnet_jax import data
from resnet_jax.data import prepare, sources
from tests.data_fixtures import data_config, fake_imagenet_manual_dir, take

ROOT = Path(__file__).resolve().parent.parent
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'

# TFDS's registered checksum of the original train-labels-idx1-ubyte.gz.
TRAIN_LABELS_SHA256 = 'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845'


def test_restore_gzip_header_reproduces_a_named_gzip():
  payload = bytes(range(256)) * 50
  named = io.BytesIO()
  with gzip.GzipFile('data-idx1-ubyte', 'wb', fileobj=named, mtime=0x59A7E9DE) as f:
    f.write(payload)
  stripped = io.BytesIO()
  with gzip.GzipFile('', 'wb', fileobj=stripped, mtime=0) as f:
    f.write(payload)
  restored = prepare.restore_gzip_header(stripped.getvalue(), 'data-idx1-ubyte', 0x59A7E9DE)
  assert restored == named.getvalue() and gzip.decompress(restored) == payload
  with pytest.raises(ValueError, match='expected a gzip header'):
    prepare.restore_gzip_header(named.getvalue(), 'x', 0)


def test_debian_fashion_mnist_files_become_the_original_downloads(tmp_path):
  assert os.path.isdir(prepare.DEBIAN_FASHION_MNIST), 'apt-get install dataset-fashion-mnist'
  prepare.rebuild_fashion_mnist(prepare.DEBIAN_FASHION_MNIST, str(tmp_path))
  data_bytes = (tmp_path / 'train-labels-idx1-ubyte.gz').read_bytes()
  assert hashlib.sha256(data_bytes).hexdigest() == TRAIN_LABELS_SHA256
  assert sorted(os.listdir(tmp_path)) == sorted(
    f'{p}-{k}-ubyte.gz' for p in ('train', 't10k') for k in ('images-idx3', 'labels-idx1')
  )


def test_fashion_mnist_prepared_offline_has_all_examples(fashion_mnist_tfds):
  config = data_config(dataset='fashion_mnist', data_dir=fashion_mnist_tfds, image_size=28)
  info = data.get_dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples) == (60_000, 10_000)
  assert (info.num_classes, info.num_channels) == (10, 1)
  for split, per_class in (('train', 6000), ('test', 1000)):
    batches = list(data.create_eval_iterator(config, global_batch_size=8192, split=split))
    labels = np.concatenate([b['label'][b['mask']] for b in batches])
    assert np.bincount(labels).tolist() == [per_class] * 10
  batch = next(data.create_train_iterator(config, global_batch_size=64, seed=0))
  assert batch['image'].shape == (64, 28, 28, 1) and batch['image'].dtype == np.float32


def test_fake_imagenet_goes_through_the_real_builder(tmp_path, monkeypatch):
  manual = fake_imagenet_manual_dir(tmp_path / 'manual')
  data_dir = str(tmp_path / 'tfds')
  assert prepare.main(['imagenet2012', '--manual_dir', manual, '--data_dir', data_dir]) == 0
  config = data_config(
    dataset='imagenet2012',
    data_dir=data_dir,
    preprocess='imagenet',
    image_size=32,
    eval_split='validation',
  )
  info = data.get_dataset_info(config)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (1000, 6, 4)
  evals = list(data.create_eval_iterator(config, global_batch_size=4))
  assert len(evals) == 1 and evals[0]['mask'].all()
  in_memory = take(data.create_train_iterator(config, global_batch_size=4, seed=0), 3)
  assert set(np.concatenate([b['label'] for b in in_memory])) == {0, 1}  # the two synsets
  monkeypatch.setattr(sources, 'MAX_IN_MEMORY_BYTES', 0)  # read by index from array_record
  by_index = take(data.create_train_iterator(config, global_batch_size=4, seed=0), 3)
  for a, b in zip(in_memory, by_index, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def _proxy_to(monkeypatch, port: int) -> None:
  """Sends every http(s) download, and so prepare's reachability check, to 127.0.0.1:port."""
  for var in ('no_proxy', 'NO_PROXY'):
    monkeypatch.delenv(var, raising=False)
  for var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
    monkeypatch.setenv(var, f'http://127.0.0.1:{port}')


@pytest.fixture
def downloads(monkeypatch):
  """The (dataset, manual_dir) of each download_and_prepare call, none of which runs."""
  calls = []
  monkeypatch.setattr(
    tfds.core.DatasetBuilder,
    'download_and_prepare',
    lambda self, download_config: calls.append((self.name, download_config.manual_dir)),
  )
  return calls


@pytest.fixture
def answering_port():
  with socket.create_server(('127.0.0.1', 0)) as server:
    yield server.getsockname()[1]


@pytest.fixture
def refusing_port():
  with socket.socket() as bound_only:
    bound_only.bind(('127.0.0.1', 0))
    yield bound_only.getsockname()[1]


@pytest.fixture
def silent_port():
  """A port that never answers a connection, as a host behind a firewall that drops packets:
  its accept queue is full (listen(0) queues one), so the kernel drops further SYNs."""
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen(0)
    queued = []
    try:
      for _ in range(4):
        try:
          queued.append(socket.create_connection(server.getsockname(), timeout=0.5))
        except TimeoutError:
          break
      else:
        pytest.fail('the accept queue never filled')
      yield server.getsockname()[1]
    finally:
      for client in queued:
        client.close()


def test_fashion_mnist_without_debian_files_uses_the_tfds_download(
  tmp_path, monkeypatch, downloads, answering_port
):
  _proxy_to(monkeypatch, answering_port)
  prepare.prepare('fashion_mnist', data_dir=str(tmp_path), debian_dir=str(tmp_path / 'absent'))
  assert downloads == [('fashion_mnist', None)] and not os.listdir(tmp_path)


def test_an_unreachable_download_fails_at_once_with_one_line(
  tmp_path, monkeypatch, capsys, downloads, refusing_port
):
  _proxy_to(monkeypatch, refusing_port)
  start = time.monotonic()
  assert prepare.main(['cifar10', '--data_dir', str(tmp_path)]) == 1
  assert time.monotonic() - start < 2 and not downloads
  assert capsys.readouterr().err.splitlines() == [
    'error: cifar10: TFDS downloads it from www.cs.toronto.edu, which cannot be reached '
    f'through the proxy 127.0.0.1:{refusing_port} (Connection refused); rerun where it is '
    f'reachable, or put cifar-10-binary.tar.gz in {tmp_path}/downloads/manual (--manual_dir)'
  ]


def test_a_silent_host_fails_after_the_connect_timeout_naming_the_debian_package(
  tmp_path, monkeypatch, downloads, silent_port
):
  _proxy_to(monkeypatch, silent_port)
  monkeypatch.setattr(prepare, 'CONNECT_TIMEOUT_S', 1.0)
  start = time.monotonic()
  with pytest.raises(ValueError) as error:
    prepare.prepare('fashion_mnist', data_dir=str(tmp_path), debian_dir=str(tmp_path / 'no'))
  assert 1.0 <= time.monotonic() - start < 3 and not downloads
  assert str(error.value).endswith(
    "(no answer within 1 s); to build it offline, run 'sudo apt-get install "
    "dataset-fashion-mnist' (Debian), then rerun"
  )


def test_files_at_hand_need_no_connection(tmp_path, monkeypatch, downloads, refusing_port):
  _proxy_to(monkeypatch, refusing_port)
  data_dir, manual = tmp_path / 'tfds', tmp_path / 'manual'
  manual.mkdir()
  builder = tfds.builder('cifar10', data_dir=str(data_dir))
  assert prepare.pending_downloads(builder, str(manual)) == {CIFAR10_URL: 'cifar-10-binary.tar.gz'}
  (manual / 'cifar-10-binary.tar.gz').write_bytes(b'')
  prepare.prepare('cifar10', data_dir=str(data_dir), manual_dir=str(manual))
  # A finished download in TFDS's cache, as an interrupted earlier prepare leaves it.
  (manual / 'cifar-10-binary.tar.gz').unlink()
  checksum = builder.url_infos[CIFAR10_URL].checksum
  cached = data_dir / 'downloads' / 'cifar10' / tfds_resource.get_dl_fname(CIFAR10_URL, checksum)
  cached.parent.mkdir(parents=True)
  cached.write_bytes(b'')
  prepare.prepare('cifar10', data_dir=str(data_dir), manual_dir=str(manual))
  cached.unlink()
  builder.data_path.mkdir(parents=True)  # prepared already: download_and_prepare reuses it
  prepare.prepare('cifar10', data_dir=str(data_dir), manual_dir=str(manual))
  assert downloads == [('cifar10', str(manual))] * 3


def test_imagenet_names_the_missing_tars(tmp_path, capsys):
  (tmp_path / 'ILSVRC2012_img_val.tar').write_bytes(b'')
  assert (
    prepare.main(
      ['imagenet2012', '--manual_dir', str(tmp_path), '--data_dir', str(tmp_path / 'tfds')]
    )
    == 1
  )
  err = capsys.readouterr().err
  assert 'missing ILSVRC2012_img_train.tar in' in err and 'img_val' not in err


def test_prepare_rejects_unknown_names(capsys):
  assert prepare.main(['fashion_mnst']) == 1
  assert 'did you mean fashion_mnist' in capsys.readouterr().err


def _stub_commands(folder: Path, uid: int, sudo_works: bool) -> Path:
  """apt-get that logs its arguments, id -u printing `uid`, sudo that works or asks a password."""
  folder.mkdir()
  log = folder / 'apt-get.log'
  stubs = {
    'apt-get': f'echo "$*" >> {log}',
    'id': f'echo {uid}',
    'sudo': '[ "$1" = -n ] && shift; exec "$@"' if sudo_works else 'exit 1',
  }
  for name, body in stubs.items():
    (folder / name).write_text(f'#!/bin/sh\n{body}\n')
    (folder / name).chmod(0o755)
  return log


def _setup_env(tmp_path: Path, path: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith('MAKE')}
  # The Debian package's folder absent, as on a fresh machine; a Python that has venv.
  return {
    **env,
    'PATH': path,
    'FASHION_MNIST_DIR': str(tmp_path / 'absent'),
    'PYTHON': sys.executable,
  }


def test_make_train_without_root_or_sudo_stops_at_once_with_one_line(tmp_path):
  log = _stub_commands(tmp_path / 'bin', uid=1000, sudo_works=False)
  env = _setup_env(tmp_path, f'{tmp_path / "bin"}:{os.environ["PATH"]}')
  start = time.monotonic()
  make = [shutil.which('make'), '--no-print-directory', '-C', str(ROOT), 'train']
  # Its own venv folder: were the set-up to go on, the repository's .venv stays untouched.
  make += [f'VENV={tmp_path / "venv"}', f'PYTHON={sys.executable}']
  result = subprocess.run(make, env=env, capture_output=True, text=True, timeout=60)
  assert time.monotonic() - start < 5 and result.returncode != 0
  error, make_status = result.stderr.splitlines()
  assert error == (
    "error: Fashion-MNIST needs Debian's dataset-fashion-mnist: run "
    "'sudo apt-get install dataset-fashion-mnist', then make train again"
  )
  assert make_status.startswith('make: *** ') and result.stdout == ''
  assert not log.exists() and not (tmp_path / 'venv').exists()


@pytest.mark.parametrize('uid, sudo_works', [(0, False), (1000, True)])
def test_setup_installs_the_missing_package_as_root_or_through_sudo(tmp_path, uid, sudo_works):
  log = _stub_commands(tmp_path / 'bin', uid=uid, sudo_works=sudo_works)
  env = _setup_env(tmp_path, f'{tmp_path / "bin"}:{os.environ["PATH"]}')
  script = [shutil.which('sh'), str(ROOT / 'tools' / 'install_system_packages.sh')]
  result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert log.read_text().splitlines() == ['update -qq', 'install -y -qq dataset-fashion-mnist']


def test_setup_without_apt_get_leaves_fashion_mnist_to_tfds(tmp_path):
  (tmp_path / 'bin').mkdir()  # no apt-get, nothing else either
  env = _setup_env(tmp_path, str(tmp_path / 'bin'))
  script = [shutil.which('sh'), str(ROOT / 'tools' / 'install_system_packages.sh')]
  result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
  assert (result.returncode, result.stdout, result.stderr) == (0, '', '')
