"""End to end on synthetic data through the functions train.py uses: a tiny network
trains, checkpoints, resumes exactly where it stopped, and refuses a changed model."""

import jax
import numpy as np
import pytest

from configs import default
from resnet_jax import checkpoint, metrics, parallel, trainer
from resnet_jax.cli import ConfigError


def tiny_config(num_steps):
  config = default.get_config()
  config.data.dataset = 'synthetic'
  config.data.image_size = 8
  config.data.train_split = 'train[:32]'  # One batch: the same 32 examples every step.
  config.data.eval_split = 'train[:32]'
  config.model.depth, config.model.width, config.model.bn_group_size = 8, 8, 0
  config.train.batch_size = 32
  config.train.num_steps = num_steps
  config.train.log_every = 2
  config.train.eval_every = 6
  config.train.checkpoint_every = 3
  config.optim.learning_rate = 0.8
  config.optim.boundaries = (100,)
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Run A: 6 steps, then resumed to 10. Run B: 10 steps straight."""
  a, b = tmp_path_factory.mktemp('a'), tmp_path_factory.mktemp('b')
  first = trainer.train_and_evaluate(tiny_config(6), a)
  resumed = trainer.train_and_evaluate(tiny_config(10), a)
  straight = trainer.train_and_evaluate(tiny_config(10), b)
  return a, b, first, resumed, straight


def _restore(workdir, config):
  setup = trainer.setup(config, parallel.create_mesh())
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', read_only=True)
  state, _ = ckpt.restore(setup.state)
  return state


def test_trains_writes_metrics_and_checkpoints(runs):
  a, b, first, _, _ = runs
  assert first['num_examples'] == 32 and 0 <= first['top1'] <= 1
  train = metrics.read_metrics(b, 'train')
  assert [r['step'] for r in train] == [2, 4, 6, 8, 10]
  assert {'loss', 'top1', 'learning_rate', 'grad_norm'} <= train[0].keys()
  assert {'images_per_sec', 'step_time'} <= train[1].keys()
  assert train[-1]['loss'] < train[0]['loss'] - 0.3  # It learns the 32 examples.
  assert [r['step'] for r in metrics.read_metrics(b, 'eval')] == [6, 10]
  assert checkpoint.load_config(a).train.num_steps == 10
  assert (a / 'checkpoints').is_dir() and any(p.name.startswith('events') for p in a.iterdir())


def test_resume_continues_the_same_run(runs):
  a, b, _, resumed, straight = runs
  assert [r['step'] for r in metrics.read_metrics(a, 'train')] == [2, 4, 6, 8, 10]
  state_a, state_b = _restore(a, tiny_config(10)), _restore(b, tiny_config(10))
  assert int(state_a.step) == int(state_b.step) == 10
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5),
    (state_a.params, state_a.batch_stats, state_a.opt_state),
    (state_b.params, state_b.batch_stats, state_b.opt_state),
  )
  assert resumed['loss'] == pytest.approx(straight['loss'], rel=1e-3)


def test_finished_run_is_not_retrained(runs):
  a = runs[0]
  again = trainer.train_and_evaluate(tiny_config(10), a)
  assert again['loss'] == pytest.approx(runs[3]['loss'], rel=1e-4)
  assert [r['step'] for r in metrics.read_metrics(a, 'train')][-1] == 10


def test_changed_model_is_refused(runs):
  config = tiny_config(12)
  config.model.width = 16
  with pytest.raises(ConfigError, match='model.width: 8 -> 16'):
    trainer.train_and_evaluate(config, runs[0])


def test_bad_model_value_is_a_config_error(tmp_path):
  config = tiny_config(2)
  config.model.depth = 9
  with pytest.raises(ConfigError, match='config.model'):
    trainer.train_and_evaluate(config, tmp_path)


_EIGHT_DEVICES = """
import jax, numpy as np
from configs import default
from resnet_jax import evaluator, parallel, trainer
assert jax.device_count() == 8
c = default.get_config()
c.data.dataset, c.data.image_size = 'synthetic', 8
c.model.depth, c.model.width, c.model.bn_group_size = 8, 4, 0
c.train.batch_size = 32
mesh = parallel.create_mesh()
s = trainer.setup(c, mesh)
step = trainer.make_train_step(s.graphdef, s.tx, s.schedule, mesh)
rng = np.random.default_rng(0)
batch = {'image': rng.normal(size=(32, 8, 8, 3)).astype(np.float32),
         'label': rng.integers(0, 10, 32).astype(np.int32)}
state, losses = s.state, []
for _ in range(3):
  state, m = step(state, parallel.shard_batch(batch, mesh))
  losses.append(float(m['loss']))
assert losses[-1] < losses[0], losses
assert state.params['head']['kernel'].sharding.is_fully_replicated and int(state.step) == 3
assert step._cache_size() == 1  # Compiled once.
eval_batch = parallel.shard_batch({**batch, 'mask': np.ones(32, bool)}, mesh)
sums = evaluator.make_eval_step(s.graphdef, mesh)(state.params, state.batch_stats, eval_batch)
assert float(sums['num_examples']) == 32
print('ok')
"""


@pytest.mark.slow
def test_train_step_on_eight_devices():
  import os
  import pathlib
  import subprocess
  import sys

  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=8',
    JAX_PLATFORMS='cpu',
    TF_CPP_MIN_LOG_LEVEL='2',
    PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]),
  )
  result = subprocess.run(
    [sys.executable, '-c', _EIGHT_DEVICES], capture_output=True, text=True, env=env, timeout=240
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith('ok')


def test_bfloat16_run_feeds_bfloat16_images_and_learns(tmp_path, monkeypatch):
  from resnet_jax import data

  seen = []
  create = data.create_train_iterator

  def recording(*args, **kwargs):
    for batch in create(*args, **kwargs):
      seen.append(batch['image'].dtype)
      yield batch

  monkeypatch.setattr(data, 'create_train_iterator', recording)
  config = tiny_config(4)
  config.model.dtype = 'bfloat16'
  result = trainer.train_and_evaluate(config, tmp_path)
  assert {str(d) for d in seen} == {'bfloat16'}
  assert np.isfinite(result['loss'])
  train = metrics.read_metrics(tmp_path, 'train')
  assert train[-1]['loss'] < train[0]['loss']
