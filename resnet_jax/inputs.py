"""What the steps read, as data.pipeline says: batches that tf.data makes on the host
('tfdata'), or a small split held on the devices, batched inside the steps ('device').

  train = inputs.train_inputs(config, mesh, start_step=k)
  step = train_state.train_step(config, start, mesh, batch_from=train.batch_from)
  state, step_metrics = step(state, next(train.stream))
  for batch in inputs.eval_batches(config, mesh, batch_size=b): ...

Either way the batch of step s is a pure function of (seed, s), so a run resumes from its
step alone; with train.num_seeds > 1 each seed has its own, stacked on a leading axis.
"""

import dataclasses
import functools
import itertools
import json
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resnet_jax import parallel, train_state
from resnet_jax.data import device_data, splits


@dataclasses.dataclass(frozen=True)
class TrainInputs:
  """What each train step takes besides the state (`stream`), and how the step makes its
  batch of it (`batch_from(inputs, step)`; None: the inputs are the batch)."""

  stream: Iterator
  batch_from: Callable | None = None


def train_inputs(config: ml_collections.ConfigDict, mesh, *, start_step: int) -> TrainInputs:
  """The train inputs of `config` from step `start_step` on: with train.num_seeds > 1, each
  seed's batches (its own order and augmentation) stacked on a leading axis."""
  seeds = train_state.seeds(config)
  batch_size = config.train.batch_size
  if config.data.pipeline == 'device':
    held = _held(_key(config.data), config.data.train_split, config.model.dtype, mesh)
    batch = lambda arrays, step, seed: held.preprocessing.train_batch(
      *arrays, step, seed=seed, batch_size=batch_size
    )
    if len(seeds) == 1:
      batch_from = lambda arrays, step: batch(arrays, step, seeds[0])
    else:
      batch_from = lambda arrays, step: jax.vmap(lambda seed: batch(arrays, step, seed))(
        jnp.asarray(seeds)
      )
    return TrainInputs(itertools.repeat(held.arrays), batch_from)
  from resnet_jax import data  # Here: TensorFlow loads only for the tf.data pipeline.

  iterators = [
    data.create_train_iterator(
      config.data,
      global_batch_size=batch_size,
      seed=seed,
      start_step=start_step,
      dtype=config.model.dtype,  # bfloat16 inputs halve the host-to-device traffic
    )
    for seed in seeds
  ]
  if len(seeds) == 1:
    return TrainInputs(parallel.shard_batch(batch, mesh) for batch in iterators[0])
  stacked = (jax.tree.map(lambda *xs: np.stack(xs), *b) for b in zip(*iterators, strict=True))
  return TrainInputs(parallel.shard_batch(batches, mesh, seeds=True) for batches in stacked)


def eval_batches(
  config: ml_collections.ConfigDict, mesh, *, batch_size: int, split: str | None = None, crops=1
) -> Iterator[dict]:
  """Global batches of {'image', 'label', 'mask'}, sharded over the mesh: every example of
  the split (default data.eval_split) once, padding rows masked."""
  split = split or config.data.eval_split
  if config.data.pipeline == 'device':
    held = _held(_key(config.data), split, config.model.dtype, mesh)
    yield from device_data.eval_batches(
      held.preprocessing,
      *held.arrays,
      batch_size=batch_size,
      crops=crops,
      sharding=parallel.batch_sharding(mesh),
    )
    return
  from resnet_jax import data

  for batch in data.create_eval_iterator(
    config.data, global_batch_size=batch_size, split=split, crops=crops, dtype=config.model.dtype
  ):
    yield parallel.shard_batch(batch, mesh)


def dataset_info(config: ml_collections.ConfigDict) -> splits.DatasetInfo:
  """What the model and the schedule need of the dataset: with data.pipeline='device', read
  off the splits it holds (loaded here, once per process), else from their tf.data sources."""
  if config.data.pipeline != 'device':
    from resnet_jax import data

    return data.get_dataset_info(config.data)
  key = _key(config.data)
  train, evaluation = _loaded(key, config.data.train_split), _loaded(key, config.data.eval_split)
  return splits.DatasetInfo(
    num_classes=train.num_classes,
    num_channels=train.images.shape[-1],
    image_size=config.data.image_size,
    num_train_examples=train.labels.size,
    num_eval_examples=evaluation.labels.size,
  )


@dataclasses.dataclass(frozen=True)
class _Held:
  arrays: tuple  # (uint8 images [N, H, W, C], int32 labels [N]), replicated over the mesh
  preprocessing: device_data.Preprocessing  # normalized by the train split


def _key(data_config: ml_collections.ConfigDict) -> str:
  return json.dumps(data_config.to_dict(), sort_keys=True, default=list)


@functools.lru_cache(maxsize=4)
def _held(data_json: str, split: str, dtype: str, mesh) -> _Held:
  """A split on the devices, put there once per process (train and every eval reuse it)."""
  held = _loaded(data_json, split)
  arrays = parallel.replicate((held.images, held.labels), mesh)
  return _Held(arrays, _preprocessing(data_json, dtype))


@functools.lru_cache(maxsize=2)
def _preprocessing(data_json: str, dtype: str) -> device_data.Preprocessing:
  """The preprocessing of training and of every eval, normalized by the train split's
  statistics: computed once per process."""
  data_config = ml_collections.ConfigDict(json.loads(data_json))
  train = _loaded(data_json, data_config.train_split)
  return device_data.Preprocessing.from_config(data_config, train, dtype=dtype)


@functools.lru_cache(maxsize=2)
def _loaded(data_json: str, split: str) -> splits.InMemorySplit:
  """device_data.load_split, read once per process: the dataset's info, the eval split's
  normalization and training all read the train split."""
  return device_data.load_split(ml_collections.ConfigDict(json.loads(data_json)), split)
