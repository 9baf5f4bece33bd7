"""Shared test helpers, and one XLA compilation cache for the whole run."""

import os
import shutil
import subprocess
import tempfile

import jax
import pytest

from resnet_jax import defaults

CACHE_VARIABLE = 'JAX_COMPILATION_CACHE_DIR'
_CREATED_CACHE = pytest.StashKey[str]()  # The cache folder this run made, to remove after.


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


def pytest_unconfigure(config):
  created = config.stash.get(_CREATED_CACHE, None)
  if created:
    shutil.rmtree(created, ignore_errors=True)


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
