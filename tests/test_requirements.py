"""requirements-ACCEL.txt: each accelerator's pinned set resolves with pip at requirements.txt's
jax version, without downloading its gigabytes of CUDA or TPU wheels (`make check-accel`)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JAX_VERSION = re.search(r'^jax==(\S+)$', (ROOT / 'requirements.txt').read_text(), re.M)[1]
# What each set adds to requirements.txt, all at JAX_VERSION.
PLUGINS = {
  'cuda12': ['jax-cuda12-plugin', 'jax-cuda12-pjrt'],
  'cuda13': ['jax-cuda13-plugin', 'jax-cuda13-pjrt'],
  'tpu': [],
}


def _normalize(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def resolve(requirements: Path, report: Path) -> dict[str, str]:
  """name -> version of what pip would install into an empty venv from `requirements`."""
  result = subprocess.run(
    [
      *(sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '--quiet'),
      # Wheel metadata by HTTP range requests where the index serves no PEP 658 metadata
      # files: otherwise pip downloads each CUDA wheel whole (~3 GB) only to read it.
      '--use-feature=fast-deps',
      *('--report', str(report), '-r', str(requirements)),
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr
  installs = json.loads(report.read_text())['install']
  return {_normalize(i['metadata']['name']): i['metadata']['version'] for i in installs}


@pytest.mark.parametrize('accel', sorted(PLUGINS))
def test_accelerator_requirements_resolve_at_the_cpu_jax_version(accel, tmp_path):
  versions = resolve(ROOT / f'requirements-{accel}.txt', tmp_path / 'report.json')
  for name in ['jax', 'jaxlib', *PLUGINS[accel]]:
    assert versions.get(name) == JAX_VERSION, (name, versions.get(name))
  if accel == 'tpu':
    assert 'libtpu' in versions
  # TensorFlow (tf.data only) must never see an accelerator, let alone take its memory.
  assert 'tensorflow-cpu' in versions and 'tensorflow' not in versions
