"""train.py, evaluate.py and a sweep's report where only jax, flax, optax, orbax and
ml_collections are installed: data.pipeline='device' reading the dataset's original files
(data.original_dir).

Each run is a fresh process in which the packages a full install adds cannot be imported.
"""

import json
import os
import textwrap

import pytest
from flax import nnx

from resnet_jax.checkpoint import load_config
from resnet_jax.data import prepare
from resnet_jax.models.resnet import create_model
from resnet_jax.models.summary import count_params
from tests import entry_points

# What requirements.txt and requirements-dev.txt add to jax, flax, optax, orbax and
# ml_collections (and what those pull in).
NOT_INSTALLED = (
  'tensorflow',
  'tensorflow_datasets',
  'array_record',
  'tensorboard',
  'PIL',
  'matplotlib',
  'safetensors',
  'torch',
)


def _run_without_them(script: str, *args: str):
  """`script` (train.py or evaluate.py) run as a user runs it, each NOT_INSTALLED package
  failing to import, then the list of those that got imported anyway."""
  code = textwrap.dedent(f"""
    import runpy, sys
    sys.modules.update(dict.fromkeys({NOT_INSTALLED!r}))  # import X raises ImportError
    sys.argv = {[script, *args]!r}
    try:
      runpy.run_path({script!r}, run_name='__main__')
    finally:
      loaded = [m for m in {NOT_INSTALLED!r} if sys.modules.get(m) is not None]
      print('imported:', loaded)
  """)
  return entry_points.run(f'-c {code}', timeout=300)


@pytest.fixture(scope='module')
def fashion_mnist_files():
  assert os.path.isdir(prepare.DEBIAN_FASHION_MNIST), 'apt-get install dataset-fashion-mnist'
  return prepare.DEBIAN_FASHION_MNIST


def test_train_and_evaluate_from_the_original_files(fashion_mnist_files, tmp_path):
  workdir = tmp_path / 'run'
  flags = entry_points.tiny(
    data__dataset='fashion_mnist',
    data__pipeline='device',
    data__original_dir=fashion_mnist_files,
    data__image_size=28,
    data__train_split='train[:256]',
    data__eval_split='test[:100]',
  )
  trained = _run_without_them('train.py', *flags, f'--workdir={workdir}')
  assert trained.returncode == 0, trained.stderr
  assert 'imported: []' in trained.stdout
  assert 'tensorboard is not installed: the metrics go to metrics.jsonl only' in trained.stderr
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [2, 4] and 0 <= evals[-1]['top1'] <= 1
  assert not list(workdir.glob('events.out.tfevents.*'))

  evaluated = _run_without_them('evaluate.py', f'--workdir={workdir}')
  assert evaluated.returncode == 0, evaluated.stderr
  result = json.loads(evaluated.stdout.splitlines()[0])
  assert result['num_examples'] == 100 and result['step'] == 4
  assert evaluated.stdout.splitlines()[1] == 'imported: []'

  reporter = tmp_path / 'report.py'  # what a sweep's report reads of the run
  reporter.write_text(
    'from resnet_jax.analysis import report\n'
    f'(run,) = report.load_runs({str(workdir)!r}, "run", {{}})\n'
    'print("params", run.params)\n'
  )
  reported = _run_without_them(str(reporter))
  assert reported.returncode == 0, reported.stderr
  model = create_model(load_config(workdir).model, num_classes=10, in_channels=1, rngs=nnx.Rngs(0))
  assert reported.stdout.splitlines() == [f'params {count_params(model)}', 'imported: []']
