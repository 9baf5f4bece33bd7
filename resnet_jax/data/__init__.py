"""Input pipelines: `config.data` -> deterministic, per-process numpy batches.

  info = data.get_dataset_info(config.data)
  train = data.create_train_iterator(config.data, global_batch_size=..., seed=..., start_step=k)
  evals = data.create_eval_iterator(config.data, global_batch_size=..., crops=1)

See docs/data.md for the sources, preprocessing and the determinism/resume contract.
The names are imported on first use, not with the package: the iterators and
get_dataset_info import TensorFlow (tf.data); check_config and DatasetInfo do not, nor
does `from resnet_jax.data import device_data` (data.pipeline='device').
"""

import importlib

_MODULES = {
  'DatasetInfo': 'splits',
  'check_config': 'options',
  'create_eval_iterator': 'pipeline',
  'create_train_iterator': 'pipeline',
  'get_dataset_info': 'sources',
}
__all__ = list(_MODULES)


def __getattr__(name: str):
  if name not in _MODULES:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  return getattr(importlib.import_module(f'{__name__}.{_MODULES[name]}'), name)
