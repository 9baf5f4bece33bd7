"""train.py then evaluate.py as a user runs them (subprocesses), and evaluator.evaluate's
choice of checkpoint."""

import json
import shutil

import pytest

from resnet_jax import checkpoint, evaluator
from resnet_jax.errors import ConfigError
from tests.entry_points import TINY, run


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  result = run('train.py', *TINY, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step 4/4 (100.0%)' in result.stdout
  return workdir


def test_evaluate_py_prints_json_last_line(workdir):
  result = run('evaluate.py', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  last = json.loads(result.stdout.strip().splitlines()[-1])
  assert {'top1', 'top5', 'loss', 'num_examples', 'step'} <= last.keys()
  assert last['step'] == 4 and last['num_examples'] == 40
  assert 0 <= last['top1'] <= last['top5'] <= 1
  saved = json.loads((workdir / 'eval' / 'test_40_4.json').read_text())
  assert saved == last
  # The training loop's own final eval saw the same weights on the same split.
  train_eval = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  final = [r for r in train_eval if r['split'] == 'eval' and r['step'] == 4][0]
  assert final['top1'] == pytest.approx(last['top1']) and final['loss'] == pytest.approx(
    last['loss'], rel=1e-4
  )


def test_evaluate_checkpoint_choice(workdir):
  by_step = evaluator.evaluate(None, workdir, step=2)
  assert by_step['step'] == 2
  path_step = evaluator.evaluate(None, workdir / 'checkpoints' / '2', split='train[:8]')
  assert path_step['step'] == 2 and path_step['num_examples'] == 8
  best = evaluator.evaluate(None, workdir, best=True)
  assert best['step'] in (2, 4)
  ten_crop = evaluator.evaluate(None, workdir, crops=10)
  assert ten_crop['crops'] == 10 and ten_crop['num_examples'] == 40
  assert (workdir / 'eval' / 'test_40_4_10crop.json').exists()


def test_evaluate_py_errors_are_one_line(workdir, tmp_path):
  cases = {
    f'--workdir={tmp_path}': f'no checkpoints under {tmp_path}: pass a run directory or a '
    'checkpoint step',
    f'--workdir={workdir} --split=tset': "unknown or malformed split 'tset': the splits are "
    "['test', 'train', 'validation'], sliced like 'train[:45000]' or 'train[90%:]'",
    f'--workdir={workdir} --weights=w.safetensors': 'pass exactly one of --workdir, '
    '--checkpoint and --weights',
    '--weights=w.safetensors': '--weights needs --config: the network and dataset to evaluate '
    'it on',
    f'--workdir={workdir} --ema': f'the run in {workdir} kept no EMA weights (optim.ema_decay=0): '
    'drop --ema',
  }
  for args, line in cases.items():
    result = run('evaluate.py', *args.split())
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [f'error: {line}'], result.stderr[-3000:]


def test_no_checkpoint_to_evaluate_is_a_config_error(workdir, tmp_path):
  """What evaluate.py shows as one line, as above."""
  started = tmp_path / 'started'  # a run stopped before its first checkpoint
  (started / 'checkpoints').mkdir(parents=True)
  shutil.copy(workdir / 'config.json', started)
  with pytest.raises(ConfigError, match=f'no checkpoint in {started / "checkpoints"} yet'):
    evaluator.evaluate(None, started)
  # Said before anything else, even where the dataset is not prepared either.
  unprepared = checkpoint.load_config(started)
  unprepared.data.dataset, unprepared.data.data_dir = 'cifar10', str(tmp_path / 'no_data')
  with pytest.raises(ConfigError, match='no checkpoint in .* yet'):
    evaluator.evaluate(unprepared, started)
  with pytest.raises(ConfigError, match=r'no checkpoint at step 3 in .* \(steps: \[2, 4\]\)'):
    evaluator.evaluate(None, workdir, step=3)
