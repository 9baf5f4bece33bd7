"""Checkpoint save/restore/retention, damaged checkpoints, a full disk, and the
workdir's config.json guard."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import checkpoint, defaults
from resnet_jax.errors import ConfigError, RunError


def _state(value):
  return {
    'step': jnp.asarray(value, jnp.int32),
    'params': {'w': jnp.full((2, 3), float(value))},
    'rng': jax.random.key_data(jax.random.key(value)),
  }


def test_save_restore_keep_last_n_plus_best(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / 'checkpoints', keep=2)
  top1 = {10: 0.3, 20: 0.9, 30: 0.5, 40: None, 50: 0.4}
  for step, acc in top1.items():
    ckpt.save(step, _state(step), metrics=None if acc is None else {'top1': acc, 'loss': 1.0})
  ckpt.wait()
  assert ckpt.all_steps() == [20, 40, 50]  # The newest two plus the best.
  assert ckpt.latest_step() == 50
  assert ckpt.best_step() == 20
  ckpt.close()

  reopened = checkpoint.Checkpointer(tmp_path / 'checkpoints', keep=2, read_only=True)
  abstract = jax.eval_shape(lambda: _state(0))
  state, meta = reopened.restore(abstract)
  assert int(state['step']) == 50
  np.testing.assert_array_equal(state['params']['w'], np.full((2, 3), 50.0))
  np.testing.assert_array_equal(state['rng'], jax.random.key_data(jax.random.key(50)))
  assert meta['step'] == 50 and meta['metrics'] == {'top1': 0.4, 'loss': 1.0}
  state, _ = reopened.restore(_state(0), step=reopened.best_step())
  assert int(state['step']) == 20
  with pytest.raises(ConfigError, match='step 30'):
    reopened.restore(abstract, step=30)


def test_relative_directory_works(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # as in `train.py --workdir=runs/default`
  ckpt = checkpoint.Checkpointer('runs/default/checkpoints', keep=1, async_save=False)
  ckpt.save(3, _state(3))
  assert (tmp_path / 'runs/default/checkpoints/3').is_dir()
  state, _ = ckpt.restore(jax.eval_shape(lambda: _state(0)))
  assert int(state['step']) == 3


def test_best_step_is_none_without_evaluations(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, keep=1, async_save=False)
  ckpt.save(1, _state(1))
  assert ckpt.best_step() is None and ckpt.latest_step() == 1


def test_config_json_round_trip_and_model_change_refused(tmp_path):
  config = defaults.get_config()
  checkpoint.save_config(config, tmp_path)
  assert checkpoint.load_config(tmp_path).to_dict()['model'] == config.model.to_dict()
  config.train.num_steps = 100  # Non-model changes are allowed and recorded.
  checkpoint.save_config(config, tmp_path)
  assert checkpoint.load_config(tmp_path).train.num_steps == 100
  config.model.depth, config.model.shortcut = 56, 'B'
  with pytest.raises(ConfigError, match=r"model.depth: 20 -> 56; model.shortcut: 'A' -> 'B'"):
    checkpoint.save_config(config, tmp_path)
  assert checkpoint.load_config(tmp_path / 'nothing') is None


def test_config_of_an_older_run_gains_fields_added_since(tmp_path):
  config = defaults.get_config().to_dict()
  del config['data']['normalize']  # as saved before the field existed
  config['optim']['boundaries'] = [5, 7]  # JSON has no tuples
  (tmp_path / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
  loaded = checkpoint.load_config(tmp_path)
  assert loaded.data.normalize == defaults.get_config().data.normalize
  assert loaded.optim.boundaries == (5, 7)


def _saved(directory, steps, **kwargs):
  ckpt = checkpoint.Checkpointer(directory, keep=len(steps), **kwargs)
  for step in steps:
    ckpt.save(step, _state(step), metrics={'top1': step / 10})
  ckpt.wait()
  return ckpt


def _halve(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
  'every state file halved': lambda d: [_halve(p) for p in (d / 'state').rglob('*') if p.is_file()],
  'state metadata emptied': lambda d: (d / 'state' / '_METADATA').write_text(''),
  'meta deleted': lambda d: (d / 'meta' / 'metadata').unlink(),
  'metrics halved': lambda d: _halve(d / 'metrics' / 'metrics'),  # fails opening, not restoring
}


@pytest.mark.parametrize('damage', DAMAGES)
def test_damaged_newest_checkpoint_falls_back_and_is_set_aside(tmp_path, caplog, damage):
  _saved(tmp_path, [1, 2, 3]).close()
  DAMAGES[damage](tmp_path / '3')
  ckpt = checkpoint.Checkpointer(tmp_path, keep=3)
  state, meta = ckpt.restore(jax.eval_shape(lambda: _state(0)))
  assert int(state['step']) == 2 and meta['step'] == 2
  np.testing.assert_array_equal(state['params']['w'], np.full((2, 3), 2.0))
  assert 'checkpoint 3 in' in caplog.text and 'does not read back' in caplog.text
  assert ckpt.all_steps() == [1, 2] and (tmp_path / '3.unreadable').is_dir()
  ckpt.save(3, _state(3))  # The resumed run saves step 3 anew; the damaged files stay.
  ckpt.wait()
  assert ckpt.all_steps() == [1, 2, 3] and int(ckpt.restore(_state(0))[0]['step']) == 3
  DAMAGES['every state file halved'](tmp_path / '3')
  assert int(ckpt.restore(_state(0))[0]['step']) == 2
  assert (tmp_path / '3.unreadable-2').is_dir()


def test_read_only_falls_back_without_renaming(tmp_path):
  _saved(tmp_path, [1, 2]).close()
  DAMAGES['every state file halved'](tmp_path / '2')
  ckpt = checkpoint.Checkpointer(tmp_path, read_only=True)
  assert int(ckpt.restore(_state(0))[0]['step']) == 1
  assert ckpt.all_steps() == [1, 2] and not (tmp_path / '2.unreadable').exists()
  with pytest.raises(RunError, match='checkpoint 2 in .* does not read back'):
    ckpt.restore(_state(0), step=2)  # Asked for by name: no fallback.


def test_checkpoints_of_another_structure_are_an_error_and_left_alone(tmp_path):
  _saved(tmp_path, [1, 2]).close()
  ckpt = checkpoint.Checkpointer(tmp_path)
  other = {'step': jnp.zeros((), jnp.int32), 'params': {'v': jnp.zeros((4,))}}
  with pytest.raises(RunError, match=r'no checkpoint in .* reads back into this model \(step 2'):
    ckpt.restore(other)
  assert ckpt.all_steps() == [1, 2] and not list(tmp_path.glob('*.unreadable'))


def test_save_killed_midway_leaves_nothing_that_counts(tmp_path):
  _saved(tmp_path, [1, 2]).close()
  shutil.copytree(tmp_path / '2', tmp_path / '3.orbax-checkpoint-tmp')  # a save killed -9
  ckpt = checkpoint.Checkpointer(tmp_path, keep=3)
  assert ckpt.all_steps() == [1, 2] and int(ckpt.restore(_state(0))[0]['step']) == 2
  ckpt.save(3, _state(3))
  ckpt.wait()
  assert ckpt.all_steps() == [1, 2, 3] and not list(tmp_path.glob('*tmp*'))


# orbax's failed write leaves a callback for an event loop that has closed by then.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_full_disk_save_fails_and_keeps_the_last_good_checkpoint(small_disk):
  disk = small_disk(256 << 10)
  ckpt = checkpoint.Checkpointer(disk / 'checkpoints', keep=1)
  ckpt.save(1, _state(1))
  ckpt.wait()
  big = {**_state(2), 'params': {'w': jnp.asarray(np.random.default_rng(0).random((2, 64 << 10)))}}
  with pytest.raises(RunError, match=r'saving the checkpoint of step 2 .* failed .*No space'):
    ckpt.save(2, big)
    ckpt.wait()
  assert ckpt.all_steps() == [1]
  assert int(ckpt.restore(_state(0))[0]['step']) == 1
  with pytest.raises(ConfigError, match='MiB free, less than one checkpoint'):
    checkpoint.check_free_space(disk / 'checkpoints', big)
  checkpoint.check_free_space(disk / 'checkpoints', _state(1))


def test_unwritable_workdir_is_a_config_error(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(ConfigError, match=r'cannot write to --workdir=.*file/run \(Not a directory'):
    checkpoint.save_config(defaults.get_config(), tmp_path / 'file' / 'run')
  checkpoint.save_config(defaults.get_config(), tmp_path / 'run')
  assert [p.name for p in (tmp_path / 'run').iterdir()] == [checkpoint.CONFIG_FILE]


def test_has_checkpoint_sees_finished_steps_only(tmp_path):
  directory = tmp_path / 'checkpoints'
  assert not checkpoint.has_checkpoint(directory)  # absent
  (directory / '6.orbax-checkpoint-tmp-17').mkdir(parents=True)  # a save cut short
  (directory / '3.unreadable').mkdir()  # set aside
  assert not checkpoint.has_checkpoint(directory)
  (directory / '9').mkdir()
  assert checkpoint.has_checkpoint(directory)
  (tmp_path / 'file').write_text('')
  assert not checkpoint.has_checkpoint(tmp_path / 'file' / 'checkpoints')
