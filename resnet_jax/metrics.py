"""Loss and accuracy, and where the numbers go: TensorBoard, metrics.jsonl, the console.

The TensorBoard events are written with tensorboard's own writer and protos,
which do not import TensorFlow (seconds of start-up, and GPU memory). They are
imported by MetricWriter only, which writes metrics.jsonl alone where tensorboard is
not installed: a run needs only jax, flax, optax, orbax and ml_collections.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epath

METRICS_FILE = 'metrics.jsonl'


LOSSES = ('softmax', 'bce')  # optim.loss


def targets(labels_b: jax.Array, num_classes: int, label_smoothing: float = 0.0) -> jax.Array:
  """float32 [b, num_classes] one-hot targets, label-smoothed: 1 - s + s/K and s/K."""
  targets_bk = jax.nn.one_hot(labels_b, num_classes, dtype=jnp.float32)
  return optax.smooth_labels(targets_bk, label_smoothing) if label_smoothing else targets_bk


def loss(
  logits_bk: jax.Array, targets_bk: jax.Array, kind: str = 'softmax', bce_threshold: float = 0.0
) -> jax.Array:
  """Per-example loss in float32 against probability targets (one-hot, smoothed or mixed).

  softmax: cross-entropy of the softmax. bce: binary cross-entropy of each class's
  sigmoid, averaged over the classes, as timm's BinaryCrossEntropy that "ResNet strikes
  back" trains with (its mean over the batch is timm's loss); with `bce_threshold` > 0,
  against targets made 1 above it and 0 below, as timm's `target_threshold`.
  """
  logits_bk = logits_bk.astype(jnp.float32)
  if kind == 'bce':
    if bce_threshold:
      targets_bk = (targets_bk > bce_threshold).astype(jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits_bk, targets_bk), axis=-1)
  return optax.softmax_cross_entropy(logits_bk, targets_bk)


def cross_entropy(logits_bk: jax.Array, labels_b: jax.Array, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy in float32, with optional label smoothing."""
  return loss(logits_bk, targets(labels_b, logits_bk.shape[-1], label_smoothing))


def correct_topk(logits_bk: jax.Array, labels_b: jax.Array, k: int) -> jax.Array:
  """Per example: is the label among the k highest logits?

  Ties and NaNs count against the label, so that a network that outputs a
  constant (or NaN) scores chance or below, never 100%.
  """
  label_logit_b = jnp.take_along_axis(logits_bk, labels_b[:, None], axis=-1)
  not_below_b = jnp.sum(~(logits_bk < label_logit_b), axis=-1)  # Includes the label itself.
  return not_below_b <= k


def eval_sums(logits_bk: jax.Array, labels_b: jax.Array, mask_b: jax.Array) -> dict:
  """Sums over the real (mask True) examples of a batch; padding counts for nothing."""
  mask_b = mask_b.astype(jnp.float32)
  return {
    'loss': jnp.sum(cross_entropy(logits_bk, labels_b) * mask_b),
    'top1': jnp.sum(correct_topk(logits_bk, labels_b, 1) * mask_b),
    'top5': jnp.sum(correct_topk(logits_bk, labels_b, 5) * mask_b),
    'num_examples': jnp.sum(mask_b),
  }


class EvalAccumulator:
  """Adds `eval_sums` over batches on the host; `result()` gives the means."""

  def __init__(self):
    self._sums = None

  def add(self, sums: dict):
    sums = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()}
    if self._sums is None:
      self._sums = sums
    else:
      for k, v in sums.items():
        self._sums[k] = self._sums[k] + v

  def result(self) -> dict:
    """{'loss', 'top1', 'top5' (fractions), 'num_examples' (int)}; of several seeds (sums
    with a leading seed axis), each a [seeds] array."""
    if not self._sums or not np.all(self._sums['num_examples']):
      raise ValueError('no examples were evaluated')
    n = self._sums['num_examples']
    out = {k: v / n for k, v in self._sums.items() if k != 'num_examples'}
    out = {k: float(v) if np.ndim(v) == 0 else v for k, v in out.items()}
    out['num_examples'] = int(round(float(np.max(n))))
    return out


def by_seed(values: dict, seeds: list[int]) -> dict:
  """Metrics of several seeds trained at once (each value [seeds]) as their mean under the
  metric's name, their sample standard deviation (n - 1) as '<name>_std', and each seed's
  as 'seed<s>/<name>'."""
  out = {}
  for name, per_seed in values.items():
    per_seed = np.asarray(per_seed, np.float64)
    out[name] = float(per_seed.mean())
    out[f'{name}_std'] = float(per_seed.std(ddof=1))
    out.update({f'seed{s}/{name}': float(v) for s, v in zip(seeds, per_seed, strict=True)})
  return out


class MetricWriter:
  """Scalars to TensorBoard (tag `split/name`) and one JSON object per line in metrics.jsonl;
  to metrics.jsonl alone, with a warning, where tensorboard is not installed.

  Only one process of a multi-process job should write: pass enabled=False elsewhere.
  """

  def __init__(self, workdir, *, enabled: bool = True):
    self._jsonl = self._events = None
    if not enabled:
      return
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = (workdir / METRICS_FILE).open('a')
    try:
      from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
      logging.warning('tensorboard is not installed: the metrics go to %s only', METRICS_FILE)
      return
    self._events = EventFileWriter(str(workdir))

  def write(self, step: int, split: str, scalars: dict):
    if self._jsonl is None:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), 'split': split, **scalars}) + '\n')
    self._jsonl.flush()
    if self._events is None:
      return
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(
      value=[
        summary_pb2.Summary.Value(tag=f'{split}/{k}', simple_value=v) for k, v in scalars.items()
      ]
    )
    self._events.add_event(event_pb2.Event(step=int(step), wall_time=time.time(), summary=summary))

  def flush(self):
    for sink in (self._jsonl, self._events):
      if sink is not None:
        sink.flush()

  def close(self):
    for sink in (self._jsonl, self._events):
      if sink is not None:
        sink.close()


def read_metrics(workdir, split: str | None = None) -> list[dict]:
  """The records of metrics.jsonl (of one split if given), in order."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in records if split is None or r['split'] == split]


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'


class Progress:
  """Throughput and ETA from the steps done since this process started (or resumed).

  Rates are measured between consecutive `mark`s (the caller marks after the
  compiling first step, and after evals); `line` reads e.g.
  `step 1200/64000 (1.9%) loss 1.234 top1 54.1% lr 0.1 | 812 img/s, 0.158 s/step, ETA 2h45m`.
  """

  def __init__(self, total_steps: int, batch_size: int, clock=time.monotonic):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._clock = clock
    self._last = None  # (step, time) of the previous mark

  def mark(self, step: int) -> dict:
    """Call at each log point: {'steps_per_sec', 'images_per_sec', 'step_time'} since the last."""
    now = self._clock()
    rates = {}
    if self._last is not None and step > self._last[0] and now > self._last[1]:
      step_time = (now - self._last[1]) / (step - self._last[0])
      rates = {
        'step_time': step_time,
        'steps_per_sec': 1 / step_time,
        'images_per_sec': self.batch_size / step_time,
      }
    self._last = (step, now)
    return rates

  def line(self, step: int, scalars: dict, rates: dict) -> str:
    parts = [f'step {step}/{self.total_steps} ({100 * step / self.total_steps:.1f}%)']
    if 'loss' in scalars:
      parts.append(f'loss {scalars["loss"]:.4f}')
    if 'top1' in scalars:
      parts.append(f'top1 {100 * scalars["top1"]:.1f}%')
    if 'learning_rate' in scalars:
      parts.append(f'lr {scalars["learning_rate"]:.4g}')
    text = ' '.join(parts)
    if rates:
      eta = (self.total_steps - step) * rates['step_time']
      text += (
        f' | {rates["images_per_sec"]:.0f} img/s, {rates["step_time"]:.3f} s/step,'
        f' ETA {format_duration(eta)}'
      )
    return text
