"""Checkpoint save/restore/retention and the workdir's config.json guard."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from resnet_jax import checkpoint
from resnet_jax.cli import ConfigError


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
  with pytest.raises(FileNotFoundError, match='step 30'):
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
  config = default.get_config()
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
  config = default.get_config().to_dict()
  del config['data']['normalize']  # as saved before the field existed
  config['optim']['boundaries'] = [5, 7]  # JSON has no tuples
  (tmp_path / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
  loaded = checkpoint.load_config(tmp_path)
  assert loaded.data.normalize == default.get_config().data.normalize
  assert loaded.optim.boundaries == (5, 7)
