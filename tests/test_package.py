"""resnet_jax as a library: importing it defines no command-line flags, and an installed
copy works from a directory that is not the checkout (no configs/, no train.py)."""

import os
import pathlib
import pkgutil
import shutil
import subprocess
import sys
import textwrap

import pytest

import resnet_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(code: str, cwd, **env) -> subprocess.CompletedProcess:
  """`python -c code` in `cwd`, with no PYTHONPATH pointing at the checkout."""
  environ = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  environ.update(TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu', **env)
  return subprocess.run(
    [sys.executable, '-c', textwrap.dedent(code)],
    cwd=cwd,
    env=environ,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_importing_every_module_defines_no_flag():
  modules = [
    m.name for m in pkgutil.walk_packages(resnet_jax.__path__, 'resnet_jax.') if not m.ispkg
  ]
  assert {'resnet_jax.analysis.sweep', 'resnet_jax.commands.train', 'resnet_jax.cli'} <= set(
    modules
  )
  # What the dependencies define on import is theirs: import them first, then ours.
  result = _python(
    f"""
    import importlib
    import absl.logging, jax, flax.nnx, optax, orbax.checkpoint, tensorflow, tensorflow_datasets
    from absl import flags
    before = set(flags.FLAGS)
    for name in {modules!r}:
      importlib.import_module(name)
    print(sorted(set(flags.FLAGS) - before))
    """,
    cwd=ROOT,
    PYTHONPATH=str(ROOT),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == '[]'


@pytest.fixture(scope='module')
def installed(tmp_path_factory) -> pathlib.Path:
  """The package installed with pip into a folder of its own (no dependencies: the test's
  environment has them), as `pip install .` installs it, from a copy of what the package
  is built from (setuptools writes its build/ beside the sources)."""
  source = tmp_path_factory.mktemp('source')
  for name in ('pyproject.toml', 'README.md', 'requirements.txt'):
    shutil.copy(ROOT / name, source)
  shutil.copytree(
    ROOT / 'resnet_jax', source / 'resnet_jax', ignore=shutil.ignore_patterns('*.pyc')
  )
  target = tmp_path_factory.mktemp('site')
  subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'install',
      '--quiet',
      '--no-deps',
      '--no-build-isolation',
      '--target',
      str(target),
      str(source),
    ],  # fmt: skip
    check=True,
    capture_output=True,
    timeout=300,
  )
  assert (target / 'resnet_jax' / 'defaults.py').is_file()
  assert not (target / 'configs').exists()
  return target


MY_CONFIG = """
from resnet_jax import defaults

def get_config():
  config = defaults.get_config()
  config.data.dataset = 'synthetic'
  config.data.image_size = 8
  config.data.train_split, config.data.eval_split = 'train[:32]', 'test[:16]'
  config.model.depth, config.model.width = 8, 4
  config.train.batch_size = 16
  config.train.num_steps = 2
  config.train.cpu_options = 'ynn:dot'
  config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 2
  return config
"""


def test_the_installed_package_works_from_another_directory(installed, tmp_path):
  (tmp_path / 'my_config.py').write_text(MY_CONFIG)
  result = _python(
    """
    import numpy as np
    from flax import nnx
    import resnet_jax
    from resnet_jax import defaults, pretrained
    from resnet_jax.models import create_model
    from resnet_jax.pretrained import layouts

    print(resnet_jax.__file__)
    model = create_model(layouts.model_config('resnet18'), num_classes=5, rngs=nnx.Rngs(0))
    pretrained.export(model, 'r18.safetensors')
    again = pretrained.load('torchvision', 'resnet18', 'r18.safetensors')
    same = np.array_equal(model.head.kernel[...], again.head.kernel[...])
    print('round trip', same, again.head.out_features)
    """,
    cwd=tmp_path,
    PYTHONPATH=str(installed),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0] == str(installed / 'resnet_jax' / '__init__.py')
  assert lines[-1] == 'round trip True 5'

  summary = subprocess.run(
    [sys.executable, '-m', 'resnet_jax.models', '--config=my_config.py'],
    cwd=tmp_path,
    env={**os.environ, 'PYTHONPATH': str(installed), 'JAX_PLATFORMS': 'cpu'},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert summary.returncode == 0, summary.stderr[-3000:]
  assert summary.stdout.startswith('ResNet-8 (cifar stem, basic units, shortcut A')


def test_the_installed_sweep_trains_from_another_directory(installed, tmp_path):
  (tmp_path / 'my_config.py').write_text(MY_CONFIG)
  sweep = subprocess.run(
    [
      sys.executable,
      '-m',
      'resnet_jax.analysis.sweep',
      '--config=my_config.py',
      '--grid',
      'model.shortcut=A',
      '--workdir=sweep',
      '--out=report',
    ],  # fmt: skip
    cwd=tmp_path,
    env={
      **os.environ,
      'PYTHONPATH': str(installed),
      'JAX_PLATFORMS': 'cpu',
      'TF_CPP_MIN_LOG_LEVEL': '2',
    },  # fmt: skip
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
  log = (tmp_path / 'sweep' / 'shortcut-A' / 'train.log').read_text()
  assert 'eval at step 2' in log
  report = (tmp_path / 'report.md').read_text()
  assert '| model.shortcut | train error % | test error % |' in report
  assert '| A | ' in report and (tmp_path / 'report_logs' / 'shortcut-A' / 'metrics.jsonl').exists()
