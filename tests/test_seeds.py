"""train.num_seeds: K runs trained by one vmapped step equal K separate runs, step for step;
their checkpoint resumes exactly; metrics per seed and over the seeds. On eight devices
(with the device pipeline, scan and remat): tests/test_inputs.py."""

import json

import jax
import numpy as np
import pytest

from resnet_jax import evaluator, experiment, metrics, parallel, trainer
from resnet_jax.errors import ConfigError
from tests.entry_points import assert_same_state, restore_state
from tests.test_trainer import tiny_config

SEEDS = 3


def seeds_config(num_steps, num_seeds=SEEDS, seed=0):
  config = tiny_config(num_steps)
  config.seed, config.train.num_seeds = seed, num_seeds
  config.data.train_split = 'train[:64]'  # Two batches: the seeds' orders differ.
  config.train.eval_every, config.train.checkpoint_every = 3, 3
  config.optim.ema_decay = 0.5
  return config


def seed_part(state, i):
  """Seed i's own run state out of a state of several seeds."""
  take = lambda tree: jax.tree.map(lambda x: np.asarray(x)[i], tree)
  fields = ('params', 'batch_stats', 'opt_state', 'rng', 'ema')
  return state.replace(**{f: take(getattr(state, f)) for f in fields})


def close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


@pytest.fixture(scope='module')
def together_and_apart(tmp_path_factory):
  """Run K: 3 seeds for 3 steps in one run; runs 0, 1, 2: each seed alone."""
  root = tmp_path_factory.mktemp('seeds')
  together = trainer.train_and_evaluate(seeds_config(3), root / 'k')
  apart = [
    trainer.train_and_evaluate(seeds_config(3, num_seeds=1, seed=s), root / str(s))
    for s in range(SEEDS)
  ]
  return root, together, apart


def test_k_seeds_equal_k_separate_runs(together_and_apart):
  root, together, apart = together_and_apart
  for s, alone in enumerate(apart):
    for name in ('loss', 'top1', 'top5', 'ema_loss', 'ema_top1'):
      key = f'ema_seed{s}/{name[4:]}' if name.startswith('ema_') else f'seed{s}/{name}'
      assert together[key] == pytest.approx(alone[name], rel=1e-5, abs=1e-6), key
  assert together['top1'] == pytest.approx(np.mean([r['top1'] for r in apart]), abs=1e-6)
  std = np.std([r['loss'] for r in apart], ddof=1)
  assert together['loss_std'] == pytest.approx(std, rel=1e-4) and std > 0
  state = restore_state(root / 'k')
  for s in range(SEEDS):
    alone = restore_state(root / str(s))
    assert int(state.step) == int(alone.step) == 3
    jax.tree.map(close, seed_part(state, s), alone.replace(step=state.step))
  logged = metrics.read_metrics(root / 'k', 'train')[-1]
  for s in range(SEEDS):
    alone = metrics.read_metrics(root / str(s), 'train')[-1]
    assert logged[f'seed{s}/loss'] == pytest.approx(alone['loss'], rel=1e-5)


def test_k_seeds_resume_exactly(together_and_apart, tmp_path):
  root, together, _ = together_and_apart
  trainer.train_and_evaluate(seeds_config(2), tmp_path)
  assert trainer.train_and_evaluate(seeds_config(3), tmp_path) == together
  assert_same_state(restore_state(tmp_path), restore_state(root / 'k'))


def test_evaluate_reports_each_seed_and_their_spread(together_and_apart):
  root, together, _ = together_and_apart
  result = evaluator.evaluate(None, root / 'k')
  for key in ('top1', 'top1_std', 'seed0/top1', 'seed2/loss'):
    assert result[key] == pytest.approx(together[key], rel=1e-5, abs=1e-6), key
  saved = json.loads((root / 'k' / 'eval' / 'train_32_3.json').read_text())
  assert saved['seed1/top5'] == result['seed1/top5']
  assert 'top1 std' in trainer._eval_line(result)


@pytest.mark.parametrize('value', [0, -2])
def test_a_bad_number_of_seeds_is_a_config_error(value):
  config = tiny_config(1)
  config.train.num_seeds = value
  with pytest.raises(ConfigError, match=r'train.num_seeds=.*: expected a positive integer'):
    experiment.check_config(config, parallel.create_mesh())
