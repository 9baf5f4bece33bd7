"""train.py then evaluate.py as a user runs them (subprocesses), and evaluator.evaluate's
choice of checkpoint."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from resnet_jax import evaluator

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
  '--config=configs/default.py',
  '--config.data.dataset=synthetic',
  '--config.data.image_size=8',
  '--config.data.train_split=train[:64]',
  '--config.data.eval_split=test[:40]',
  '--config.model.depth=8',
  '--config.model.width=4',
  '--config.train.batch_size=16',
  '--config.train.num_steps=4',
  '--config.train.log_every=2',
  '--config.train.eval_every=2',
  '--config.train.checkpoint_every=2',
]


def _run(script, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=str(ROOT))
  return subprocess.run(
    [sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
  )


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  result = _run('train.py', *TINY, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step 4/4 (100.0%)' in result.stdout
  return workdir


def test_evaluate_py_prints_json_last_line(workdir):
  result = _run('evaluate.py', f'--workdir={workdir}')
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
  result = _run('evaluate.py', f'--workdir={tmp_path}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == f'error: no checkpoints under {tmp_path}'
  assert 'Traceback' not in result.stderr
  result = _run('evaluate.py', f'--workdir={workdir}', '--step=3')
  assert result.returncode == 2
  assert 'no checkpoint at step 3' in result.stderr.strip().splitlines()[-1]
