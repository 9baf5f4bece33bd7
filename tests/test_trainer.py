"""End to end on synthetic data through the functions train.py uses: a tiny network
trains, checkpoints, resumes bit for bit where it stopped, refuses a changed model,
trains alike on one and eight devices, stops at (or skips) a non-finite loss, saves and
stops on SIGTERM, and refuses a bad config before training."""

import os
import signal

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint, data, defaults, metrics, trainer
from resnet_jax.errors import ConfigError, RunError
from resnet_jax.models import layout
from tests.entry_points import assert_same_state, environment, restore_state, run


def tiny_config(num_steps):
  config = defaults.get_config()
  config.data.dataset = 'synthetic'
  config.data.image_size = 8
  config.data.train_split = 'train[:32]'  # One batch: the same 32 examples every step.
  config.data.eval_split = 'train[:32]'
  config.model.depth, config.model.width, config.model.bn_group_size = 8, 8, 0
  config.train.batch_size = 32
  config.train.num_steps = num_steps
  config.train.cpu_options = 'ynn:dot'
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
  state_a, state_b = restore_state(a), restore_state(b)
  assert int(state_a.step) == 10
  assert_same_state(state_a, state_b)  # Bit for bit, data order included.
  assert resumed == straight


def test_finished_run_is_not_retrained(runs):
  a = runs[0]
  again = trainer.train_and_evaluate(tiny_config(10), a)
  assert again['loss'] == pytest.approx(runs[3]['loss'], rel=1e-4)
  assert [r['step'] for r in metrics.read_metrics(a, 'train')][-1] == 10


@pytest.mark.parametrize('scan', [False, True])
def test_a_run_resumes_with_scan_switched(tmp_path, scan):
  """Checkpoints hold one entry per unit: a run saved unrolled resumes scanned, and back."""
  config = tiny_config(2)
  config.model.depth, config.model.scan = 20, scan  # 3 units per stage: 2 stacked under scan
  trainer.train_and_evaluate(config, tmp_path)
  saved = restore_state(tmp_path)
  switched = config.copy_and_resolve_references()
  switched.model.scan = not scan
  restored = restore_state(tmp_path, switched)
  stacked, per_unit = (saved, restored) if scan else (restored, saved)
  opt_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(stacked)]
  assert any(p.startswith('.opt_state') and "'repeated'" in p for p in opt_paths)
  assert_same_state(layout.to_per_unit(stacked), per_unit)
  switched.train.num_steps = 3
  trainer.train_and_evaluate(switched, tmp_path)
  assert int(restore_state(tmp_path).step) == 3


def test_changed_model_is_refused(runs):
  config = tiny_config(12)
  config.model.width = 16
  with pytest.raises(ConfigError, match='model.width: 8 -> 16'):
    trainer.train_and_evaluate(config, runs[0])


# What train.py shows as one line `error: ...` with exit status 2 (tests/test_train.py runs
# a few through train.py itself): name -> (config fields set, the start of the message).
BAD_CONFIGS = {
  'impossible depth': (
    {'model.depth': 21},
    'a CIFAR network with basic units has depth 6n+2 (e.g. 8, 20, 56), got 21',
  ),
  'impossible shortcut': (
    {'model.shortcut': 'E'},
    "model.shortcut='E' is not one of 'A', 'B', 'C', 'D', 'none'",
  ),
  'impossible variant': (
    {'model.variant': 'v3'},
    "model.variant='v3' is not one of 'v1', 'v1.5', 'preact'",
  ),
  'unknown augmentation': (
    {'data.train_crop': 'center'},
    "data.train_crop='center': expected one of scale, inception",
  ),
  'unknown split': (
    {'data.eval_split': 'tset'},
    "unknown or malformed split 'tset': the splits are ['test', 'train', 'validation']",
  ),
  'dataset not prepared': (
    {'data.dataset': 'cifar10', 'data.data_dir': '{tmp_path}'},
    "dataset 'cifar10' is not prepared in {tmp_path}/cifar10/",
  ),
  'unknown on_nonfinite': (
    {'train.on_nonfinite': 'ignore'},
    "train.on_nonfinite='ignore': use stop or skip",
  ),
  'unknown CPU compilation': (
    {'train.cpu_options': 'ynn:fast'},
    "train.cpu_options='ynn:fast': use 'autotune', xla",
  ),
  'batch not in whole BatchNorm groups': (
    {'model.bn_group_size': 12},
    'train.batch_size=32 does not divide into BatchNorm groups of model.bn_group_size=12',
  ),
  'negative learning rate': ({'optim.learning_rate': -0.1}, 'optim.learning_rate=-0.1'),
  'weights for a network of another structure': (
    {'pretrained.weights': '{tmp_path}/r18.safetensors'},
    "the torchvision/timm layout holds ImageNet ResNets with model.stem='imagenet'",
  ),
  'missing weight file': (
    {
      'pretrained.weights': '{tmp_path}/r18.safetensors',
      'model.depth': 18,
      'model.stem': 'imagenet',
      'model.shortcut': 'B',
      'model.variant': 'v1.5',
    },
    'weights file {tmp_path}/r18.safetensors does not exist',
  ),
  # Every section is checked before the dataset is opened: this one is not prepared.
  'bad optimizer, dataset not prepared': (
    {'optim.optimizer': 'adam', 'data.dataset': 'cifar10', 'data.data_dir': '{tmp_path}'},
    "optim.optimizer='adam': expected one of sgd, lars",
  ),
}


@pytest.mark.parametrize('name', BAD_CONFIGS)
def test_bad_config_is_a_config_error_before_training(tmp_path, capsys, name):
  fields, message = BAD_CONFIGS[name]
  config = tiny_config(2)
  for key, value in fields.items():
    section, field = key.split('.')
    config[section][field] = value.format(tmp_path=tmp_path) if isinstance(value, str) else value
  with pytest.raises(ConfigError) as error:
    trainer.train_and_evaluate(config, tmp_path / 'run')
  assert str(error.value).startswith(message.format(tmp_path=tmp_path)), error.value
  assert 'training' not in capsys.readouterr().out


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
  """A ValueError from inside the code is not dressed up as the user's config error."""

  def broken(data_config):
    raise ValueError('a bug')

  monkeypatch.setattr(data, 'get_dataset_info', broken)
  with pytest.raises(ValueError, match='a bug') as error:
    trainer.train_and_evaluate(tiny_config(2), tmp_path / 'run')
  assert not isinstance(error.value, ConfigError)


def test_unwritable_workdir_is_a_config_error_before_training(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(ConfigError, match=r'cannot write to --workdir=.*/file/run \(Not a direc'):
    trainer.train_and_evaluate(tiny_config(2), tmp_path / 'file' / 'run')


_ONE_AND_EIGHT_DEVICES = """
import jax, numpy as np
from resnet_jax import defaults
from resnet_jax import experiment, parallel, train_state
assert jax.device_count() == 8
rng = np.random.default_rng(0)
batches = [{'image': rng.normal(size=(32, 8, 8, 3)).astype(np.float32),
            'label': rng.integers(0, 10, 32).astype(np.int32)}] * 3
def run(devices):
  c = defaults.get_config()
  c.data.dataset, c.data.image_size = 'synthetic', 8
  c.model.depth, c.model.width, c.model.bn_group_size = 8, 4, 8  # ghost BN: groups of 8
  c.train.batch_size = 32
  mesh = parallel.create_mesh(devices)
  s = experiment.setup(c, mesh)
  step = train_state.make_train_step(s.graphdef, s.tx, s.schedule, mesh)
  state, losses = s.state, []
  for batch in batches:
    state, m = step(state, parallel.shard_batch(batch, mesh))
    losses.append(float(m['loss']))
  assert step._cache_size() == 1  # Compiled once.
  assert state.params['head']['kernel'].sharding.is_fully_replicated
  eval_batch = parallel.shard_batch({**batches[0], 'mask': np.ones(32, bool)}, mesh)
  sums = train_state.make_eval_step(s.graphdef, mesh)(state.params, state.batch_stats, eval_batch)
  return losses, jax.device_get((state.params, state.batch_stats)), jax.device_get(sums)
one, eight = run(jax.devices()[:1]), run(jax.devices())
assert one[0][-1] < one[0][0], one[0]
np.testing.assert_allclose(one[0], eight[0], rtol=1e-5)
close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
jax.tree.map(close, one[1:], eight[1:])
print('ok')
"""


def test_one_and_eight_devices_train_alike():
  """Same global batch and bn_group_size: same losses, parameters and eval, to float
  tolerance (the gradient sums run in another order). train.py end to end: test_train.py."""
  result = run('-c ' + _ONE_AND_EIGHT_DEVICES, env=environment(devices=8), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith('ok')


def test_bfloat16_run_feeds_bfloat16_images_and_learns(tmp_path, monkeypatch):
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


def _at_step(monkeypatch, at, action):
  """`action(batch)` replaces the training batch of step `at` (as the loop fetches it)."""
  create = data.create_train_iterator

  def wrapped(*args, start_step=0, **kwargs):
    for step, batch in enumerate(create(*args, start_step=start_step, **kwargs), start_step + 1):
      yield action(batch) if step == at else batch

  monkeypatch.setattr(data, 'create_train_iterator', wrapped)


def _poison(batch):
  return {**batch, 'image': batch['image'] * np.nan}


def test_sigterm_saves_that_step_and_the_rerun_ends_as_uninterrupted(
  runs, tmp_path, monkeypatch, capsys
):
  sigterm = lambda batch: os.kill(os.getpid(), signal.SIGTERM) or batch
  _at_step(monkeypatch, 5, sigterm)  # arrives while step 5 is set up: step 5 still runs
  assert trainer.train_and_evaluate(tiny_config(10), tmp_path) is None
  assert (
    f'SIGTERM: stopped after step 5 with its checkpoint in {tmp_path}' in capsys.readouterr().out
  )
  assert checkpoint.Checkpointer(tmp_path / 'checkpoints', read_only=True).latest_step() == 5
  monkeypatch.undo()
  trainer.train_and_evaluate(tiny_config(10), tmp_path)
  assert_same_state(restore_state(tmp_path), restore_state(runs[1]))


def test_nonfinite_loss_stops_before_it_is_checkpointed(tmp_path, monkeypatch):
  _at_step(monkeypatch, 5, _poison)
  with pytest.raises(
    RunError, match=r'non-finite loss or gradient at step 5; last good checkpoint: step 3 in'
  ):
    trainer.train_and_evaluate(tiny_config(10), tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path / 'checkpoints', read_only=True)
  assert ckpt.all_steps() == [3]
  state = restore_state(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


def test_nonfinite_update_is_skipped_when_configured(tmp_path, monkeypatch, capsys):
  _at_step(monkeypatch, 5, _poison)
  config = tiny_config(6)
  config.train.on_nonfinite = 'skip'
  result = trainer.train_and_evaluate(config, tmp_path)
  assert 'non-finite loss or gradient at step(s) 5: update skipped' in capsys.readouterr().out
  assert np.isfinite(result['loss'])
  assert [r['nonfinite'] for r in metrics.read_metrics(tmp_path, 'train')] == [0, 0, 0.5]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restore_state(tmp_path)))
