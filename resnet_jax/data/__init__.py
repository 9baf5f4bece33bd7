"""Input pipelines: `config.data` -> deterministic, per-process numpy batches.

  info = data.get_dataset_info(config.data)
  train = data.create_train_iterator(config.data, global_batch_size=..., seed=..., start_step=k)
  evals = data.create_eval_iterator(config.data, global_batch_size=..., crops=1)

See docs/data.md for the sources, preprocessing and the determinism/resume contract.
"""

from resnet_jax.data.pipeline import check_config, create_eval_iterator, create_train_iterator
from resnet_jax.data.sources import DatasetInfo, get_dataset_info

__all__ = [
  'DatasetInfo',
  'check_config',
  'create_eval_iterator',
  'create_train_iterator',
  'get_dataset_info',
]
