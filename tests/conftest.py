"""Shared test helpers, one XLA compilation cache for the whole run, and a check that no
test autotuned the CPU steps (resnet_jax/autotune.py) where it did not mean to."""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile

import jax
import pytest

from resnet_jax import autotune, defaults

CACHE_VARIABLE = 'JAX_COMPILATION_CACHE_DIR'
_CREATED_CACHE = pytest.StashKey[str]()  # The cache folder this run made, to remove after.
_CHOICES = pytest.StashKey[str]()  # The folder where a test that autotunes by mistake writes.


def pytest_configure(config):
  """Compile each program once per test run, not once per process: the train.py and
  evaluate.py subprocesses (and xdist's workers, which inherit the variable) build the same
  tiny networks over and over, and on CPU a threefry draw alone takes seconds to compile
  per kernel shape. The cache this makes is empty at the start of the run and removed after
  it; a JAX_COMPILATION_CACHE_DIR already set is used as it is, and kept."""
  if CACHE_VARIABLE not in os.environ:
    os.environ[CACHE_VARIABLE] = tempfile.mkdtemp(prefix='resnet_jax_test_xla_cache_')
    config.stash[_CREATED_CACHE] = os.environ[CACHE_VARIABLE]
  jax.config.update('jax_compilation_cache_dir', os.environ[CACHE_VARIABLE])
  # Tests fix train.cpu_options; those that autotune pass a cache of their own. One that
  # autotunes by mistake (timing noise in its numbers, seconds of compiles) writes here,
  # not into the user's ~/.cache, and fails the run (pytest_sessionfinish).
  if not hasattr(config, 'workerinput'):  # xdist's workers inherit the controller's
    config.stash[_CHOICES] = tempfile.mkdtemp(prefix='resnet_jax_test_choices_')
    os.environ[autotune.CACHE_VARIABLE] = os.path.join(config.stash[_CHOICES], 'choices.json')


def pytest_sessionfinish(session):
  folder = session.config.stash.get(_CHOICES, None)
  if folder and os.path.exists(os.path.join(folder, 'choices.json')):
    with open(os.path.join(folder, 'choices.json')) as f:
      keys = list(json.load(f)['choices'])
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    reporter.ensure_newline()
    reporter.write_line(
      f'error: tests autotuned the CPU steps ({keys}): fix train.cpu_options in them', red=True
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
  for folder in (config.stash.get(_CREATED_CACHE, None), config.stash.get(_CHOICES, None)):
    if folder:
      shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def model_config():
  """`config.model` of the defaults (CIFAR ResNet-20, option A), unlocked copy."""
  return defaults.get_config().model


@pytest.fixture
def small_disk(tmp_path):
  """mount(size_bytes) -> the path of a tmpfs that small (needs the right to mount;
  the test is skipped elsewhere). Unmounted afterwards."""
  mounted = []

  def mount(size: int):
    path = tmp_path / f'disk{len(mounted)}'
    path.mkdir()
    result = subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True
    )
    if result.returncode:
      pytest.skip(f'cannot mount a small tmpfs: {result.stderr.decode().strip()}')
    mounted.append(path)
    return path

  yield mount
  for path in mounted:
    subprocess.run(['umount', str(path)], check=True)


@pytest.fixture(scope='session')
def fashion_mnist_tfds(tmp_path_factory, worker_id) -> str:
  """A TFDS data_dir with Fashion-MNIST prepared offline from /usr/share/datasets/fashion-mnist
  (~20 s), once per test run: xdist's workers share it, the first to ask prepares it."""
  from resnet_jax.data import prepare

  assert os.path.isdir(prepare.DEBIAN_FASHION_MNIST), 'apt-get install dataset-fashion-mnist'
  if worker_id == 'master':  # one process
    root = tmp_path_factory.mktemp('fashion_mnist')
  else:  # this run's folder, above each worker's own
    root = tmp_path_factory.getbasetemp().parent
  data_dir, done = root / 'fashion_mnist_tfds', root / 'fashion_mnist_tfds.done'
  with open(root / 'fashion_mnist_tfds.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait for the one preparing
    if not done.exists():
      prepare.prepare('fashion_mnist', data_dir=str(data_dir))
      done.touch()
  return str(data_dir)
