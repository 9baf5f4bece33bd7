"""Loss/accuracy arithmetic and the metric writers."""

import glob
import json

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnet_jax import metrics


def test_cross_entropy_with_label_smoothing():
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  assert float(metrics.cross_entropy(logits, jnp.array([0]))[0]) == pytest.approx(np.log(2))
  # Smoothing 0.3 over 3 classes: targets (0.8, 0.1, 0.1).
  expected = -(0.8 * np.log(0.5) + 0.2 * np.log(0.25))
  smoothed = metrics.cross_entropy(logits, jnp.array([0]), label_smoothing=0.3)
  assert float(smoothed[0]) == pytest.approx(expected, rel=1e-6)


def test_topk_and_masked_eval_sums():
  logits = jnp.array(
    [
      [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # label 6: top-1
      [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 4: top-5, not top-1
      [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 6: neither
      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0],
    ]
  )  # padding, ties: neither
  labels = jnp.array([6, 4, 6, 0])
  assert metrics.correct_topk(logits, labels, 1).tolist() == [True, False, False, False]
  assert metrics.correct_topk(logits, labels, 5).tolist() == [True, True, False, False]
  constant = jnp.zeros((2, 10))
  assert not metrics.correct_topk(constant, jnp.array([0, 3]), 1).any()
  assert not metrics.correct_topk(jnp.full((1, 10), jnp.nan), jnp.array([0]), 5).any()
  acc = metrics.EvalAccumulator()
  acc.add(metrics.eval_sums(logits[:2], labels[:2], jnp.array([True, True])))
  acc.add(metrics.eval_sums(logits[2:], labels[2:], jnp.array([True, False])))
  result = acc.result()
  assert result['num_examples'] == 3
  assert result['top1'] == pytest.approx(1 / 3)
  assert result['top5'] == pytest.approx(2 / 3)
  full = metrics.cross_entropy(logits[:3], labels[:3])
  assert result['loss'] == pytest.approx(float(full.mean()), rel=1e-6)


def test_writer_jsonl_and_tensorboard(tmp_path):
  writer = metrics.MetricWriter(tmp_path)
  writer.write(10, 'train', {'loss': 2.5, 'learning_rate': 0.1})
  writer.write(20, 'eval', {'top1': 0.75})
  writer.close()
  assert metrics.read_metrics(tmp_path) == [
    {'step': 10, 'split': 'train', 'loss': 2.5, 'learning_rate': 0.1},
    {'step': 20, 'split': 'eval', 'top1': 0.75},
  ]
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(line)['step'] for line in lines] == [10, 20]
  (events_file,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  events = EventAccumulator(events_file)
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars('eval/top1')] == [(20, 0.75)]
  assert events.Scalars('train/loss')[0].value == 2.5


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics.MetricWriter(tmp_path / 'run', enabled=False)
  writer.write(1, 'train', {'loss': 1.0})
  writer.close()
  assert not (tmp_path / 'run').exists()


def test_progress_rates_and_eta():
  times = iter([100.0, 110.0])
  progress = metrics.Progress(total_steps=1000, batch_size=128, clock=lambda: next(times))
  assert progress.mark(0) == {}  # The first interval would include compilation.
  rates = progress.mark(100)
  assert rates['step_time'] == pytest.approx(0.1)
  assert rates['images_per_sec'] == pytest.approx(1280)
  line = progress.line(100, {'loss': 1.5, 'top1': 0.5, 'learning_rate': 0.1}, rates)
  assert line == (
    'step 100/1000 (10.0%) loss 1.5000 top1 50.0% lr 0.1 | 1280 img/s, 0.100 s/step, ETA 1m30s'
  )
  assert metrics.format_duration(2 * 3600 + 45 * 60 + 10) == '2h45m'
