"""The train step's options (train_state.StepOptions): BCE loss, mixup/CutMix, EMA and
gradient accumulation; and the EMA through the loop, evaluate.py and the best checkpoint."""

import json

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint, evaluator, metrics, parallel, train_state, trainer
from resnet_jax.errors import ConfigError
from tests.entry_points import assert_same_state, environment, restore_state, run
from tests.test_trainer import tiny_config


def _start(config, mesh):
  return train_state.initialize(config, mesh, num_classes=10, in_channels=3, steps_per_epoch=1)


def _batches(n, batch=32, seed=0):
  rng = np.random.default_rng(seed)
  return [
    {
      'image': rng.normal(size=(batch, 8, 8, 3)).astype(np.float32),
      'label': rng.integers(0, 10, batch).astype(np.int32),
    }
    for _ in range(n)
  ]


def test_bce_is_the_mean_binary_cross_entropy_of_smoothed_targets():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 5)).astype(np.float32)
  labels = np.array([0, 3, 4, 1])
  targets = metrics.targets(labels, 5, label_smoothing=0.1)
  on, off = 1 - 0.1 + 0.1 / 5, 0.1 / 5
  np.testing.assert_allclose(targets, np.where(np.eye(5)[labels] > 0, on, off), rtol=1e-6)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p), axis=-1)
  np.testing.assert_allclose(metrics.loss(logits, targets, 'bce'), expected, rtol=1e-5)
  hard = np.where(targets > 0.5, 1.0, 0.0)  # a threshold of 0.5 keeps only the smoothed 1s
  expected = -np.mean(hard * np.log(p) + (1 - hard) * np.log(1 - p), axis=-1)
  np.testing.assert_allclose(metrics.loss(logits, targets, 'bce', 0.5), expected, rtol=1e-5)
  softmax = metrics.loss(logits, targets, 'softmax')
  np.testing.assert_allclose(softmax, metrics.cross_entropy(logits, labels, 0.1), rtol=1e-6)


def test_ema_averages_parameters_and_bn_statistics_every_k_steps():
  mesh = parallel.create_mesh()
  config = tiny_config(4)
  config.optim.ema_decay, config.optim.ema_every = 0.75, 2
  start = _start(config, mesh)
  step = train_state.make_train_step(
    start.graphdef, start.tx, start.schedule, mesh, train_state.StepOptions.from_config(config, 1)
  )
  state = start.state
  weights = lambda s: jax.device_get({'params': s.params, 'batch_stats': s.batch_stats})
  expected = weights(state)
  np.testing.assert_equal(jax.device_get(state.ema), expected)  # starts at the weights
  for number, batch in enumerate(_batches(4), start=1):
    state, _ = step(state, parallel.shard_batch(batch, mesh))
    if number % 2 == 0:
      expected = jax.tree.map(lambda e, w: 0.75 * e + 0.25 * w, expected, weights(state))
    close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    jax.tree.map(close, jax.device_get(state.ema), expected)
  assert not np.allclose(state.ema['params']['head']['kernel'], state.params['head']['kernel'])


def test_ema_after_warmup_follows_the_weights_until_the_warmup_ends():
  mesh = parallel.create_mesh()
  config = tiny_config(4)
  config.optim.ema_decay, config.optim.ema_after_warmup, config.optim.warmup_steps = 0.5, True, 2
  start = _start(config, mesh)
  options = train_state.StepOptions.from_config(config, 1)
  assert options.ema_start == 2
  step = train_state.make_train_step(start.graphdef, start.tx, start.schedule, mesh, options)
  state, batches = start.state, _batches(3)
  weights = lambda s: jax.device_get({'params': s.params, 'batch_stats': s.batch_stats})
  for batch in batches[:2]:
    state, _ = step(state, parallel.shard_batch(batch, mesh))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ema), weights(state))
  before = jax.device_get(state.ema)
  state, _ = step(state, parallel.shard_batch(batches[2], mesh))
  expected = jax.tree.map(lambda e, w: 0.5 * e + 0.5 * w, before, weights(state))
  close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  jax.tree.map(close, jax.device_get(state.ema), expected)


def test_without_ema_the_state_holds_none():
  start = _start(tiny_config(1), parallel.create_mesh())
  assert start.state.ema == {}


def test_a_mixed_batch_is_a_function_of_the_step_and_reports_no_top1():
  mesh = parallel.create_mesh()
  config = tiny_config(2)
  config.data.mixup_alpha, config.data.cutmix_alpha = 0.2, 1.0
  start = _start(config, mesh)
  options = train_state.StepOptions.from_config(config, 1)
  step = train_state.make_train_step(start.graphdef, start.tx, start.schedule, mesh, options)
  plain = train_state.make_train_step(start.graphdef, start.tx, start.schedule, mesh)
  batch = parallel.shard_batch(_batches(1)[0], mesh)
  host = jax.device_get(start.state)

  def loss(step_fn, number):
    state = parallel.replicate(host.replace(step=np.int32(number)), mesh)  # donated
    step_metrics = step_fn(state, batch)[1]
    assert ('top1' in step_metrics) == (step_fn is plain)
    return float(step_metrics['loss'])

  losses = [loss(step, n) for n in (0, 1, 0)]
  assert losses[0] == losses[2] and losses[0] != losses[1]
  assert loss(plain, 0) == loss(plain, 1) != losses[0]


def test_a_run_with_mixing_ema_and_bce_resumes_exactly(tmp_path):
  def config(num_steps):
    c = tiny_config(num_steps)
    c.data.mixup_alpha, c.data.cutmix_alpha = 0.4, 1.0
    c.optim.loss, c.optim.label_smoothing = 'bce', 0.1
    c.optim.ema_decay = 0.5
    c.train.eval_every = 2
    return c

  trainer.train_and_evaluate(config(2), tmp_path / 'a')
  resumed = trainer.train_and_evaluate(config(4), tmp_path / 'a')
  straight = trainer.train_and_evaluate(config(4), tmp_path / 'b')
  assert resumed == straight and {'top1', 'ema_top1', 'ema_loss', 'ema_top5'} <= resumed.keys()
  assert resumed['ema_loss'] != resumed['loss']
  assert_same_state(restore_state(tmp_path / 'a'), restore_state(tmp_path / 'b'))
  train = metrics.read_metrics(tmp_path / 'a', 'train')
  assert train and not any('top1' in r for r in train)


def test_evaluate_ema_and_the_best_checkpoint_by_either(tmp_path):
  config = tiny_config(4)
  config.optim.ema_decay = 0.9
  config.train.eval_every, config.train.checkpoint_every = 2, 2
  trainer.train_and_evaluate(config, tmp_path)
  evals = {r['step']: r for r in metrics.read_metrics(tmp_path, 'eval')}
  raw = evaluator.evaluate(None, tmp_path, step=4)
  ema = evaluator.evaluate(None, tmp_path, step=4, ema=True)
  assert raw['top1'] == pytest.approx(evals[4]['top1']) and raw['loss'] != ema['loss']
  assert ema['loss'] == pytest.approx(evals[4]['ema_loss'], rel=1e-5) and ema['ema'] is True
  saved = json.loads((tmp_path / 'eval' / 'train_32_4_ema.json').read_text())  # split train[:32]
  assert saved['loss'] == ema['loss']
  ckpt = checkpoint.Checkpointer(tmp_path / 'checkpoints', read_only=True)
  by_either = {s: max(evals[s]['top1'], evals[s]['ema_top1']) for s in evals}
  assert by_either[ckpt.best_step()] == max(by_either.values())
  ckpt.close()
  config.optim.ema_decay = 0.0
  with pytest.raises(ConfigError, match='kept no EMA weights .optim.ema_decay=0.: drop --ema'):
    evaluator.evaluate(config, tmp_path, ema=True)


def test_checkpoints_rank_by_the_better_of_weights_and_ema():
  rank = checkpoint._top1
  assert rank({'top1': 0.5, 'ema_top1': 0.7}) == 0.7 and rank({'top1': 0.6}) == 0.6
  assert rank(None) == -np.inf


_ACCUMULATION = """
import jax, numpy as np
from resnet_jax import parallel, train_state
from tests.test_trainer import tiny_config
rng = np.random.default_rng(0)
batch = {'image': rng.normal(size=(64, 8, 8, 3)).astype(np.float32),
         'label': rng.integers(0, 10, 64).astype(np.int32)}
def run(devices, accum, group):
  c = tiny_config(1)
  c.model.bn_group_size, c.train.batch_size, c.train.grad_accum_steps = group, 64, accum
  mesh = parallel.create_mesh(devices)
  s = train_state.initialize(c, mesh, num_classes=10, in_channels=3, steps_per_epoch=1)
  options = train_state.StepOptions.from_config(c, 1)
  step = train_state.make_train_step(s.graphdef, s.tx, s.schedule, mesh, options)
  state, m = step(s.state, parallel.shard_batch(batch, mesh))
  return jax.device_get((state.params, state.batch_stats, m['loss'], m['top1'], m['grad_norm']))
close = lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)
for group in (4, 16):  # groups of 4 fit each device's part of a micro-batch; 16 do not
  one = run(jax.devices()[:1], 1, group)
  jax.tree.map(close, one, run(jax.devices()[:1], 4, group))
  eight = run(jax.devices(), 2, group)
  if group == 4:
    jax.tree.map(close, one, eight)
  else:  # valid BatchNorm groups, but not the batch's: another step
    assert not np.allclose(one[2], eight[2], rtol=1e-4)
print('ok')
"""


def test_accumulated_micro_batches_equal_one_batch():
  """k micro-batches of B/k give the parameters, BN statistics, loss, top-1 and gradient of
  one batch of B, on one device and on eight, where the BatchNorm groups fit the parts of a
  micro-batch that each device computes."""
  result = run('-c ' + _ACCUMULATION, env=environment(devices=8), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith('ok')


@pytest.mark.parametrize(
  'fields, message',
  [
    ({'grad_accum_steps': 0}, r'train.grad_accum_steps=0: expected a positive integer'),
    ({'grad_accum_steps': 3}, r'does not split into train.grad_accum_steps=3 micro-batches'),
    (
      {'grad_accum_steps': 2, 'batch_size': 48},
      r'train.batch_size=48 / train.grad_accum_steps=2 does not divide into BatchNorm groups',
    ),
  ],
)
def test_bad_accumulation_is_a_config_error(fields, message):
  from resnet_jax import experiment

  config = tiny_config(1)
  config.model.bn_group_size = 16
  config.train.update(fields)
  with pytest.raises(ConfigError, match=message):
    experiment.check_config(config, parallel.create_mesh())


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('loss', 'focal', r"optim.loss='focal': expected one of softmax, bce"),
    ('ema_decay', 1.0, r'optim.ema_decay=1.0: expected in \[0, 1\)'),
    ('ema_every', 0, r'optim.ema_every=0: expected a positive integer'),
    ('bce_target_threshold', 1.0, r'optim.bce_target_threshold=1.0: expected in \[0, 1\)'),
  ],
)
def test_bad_optim_values_are_config_errors(field, value, message):
  from resnet_jax import optim

  config = tiny_config(1)
  config.optim[field] = value
  with pytest.raises(ConfigError, match=message):
    optim.check_config(config.optim)
