"""Shared test helpers."""

import subprocess

import pytest

from configs import default


@pytest.fixture
def model_config():
  """`config.model` from configs/default.py (CIFAR ResNet-20, option A), unlocked copy."""
  return default.get_config().model


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
