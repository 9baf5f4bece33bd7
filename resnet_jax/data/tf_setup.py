"""TensorFlow for the input pipeline only: quiet, and blind to accelerators.

Importing `tf` from here (not `tensorflow` directly) guarantees that TF hides
every GPU before it builds anything, so tf.data never takes accelerator memory
that JAX needs.
"""

import contextlib
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

# RuntimeError: TF was initialized elsewhere first; then it is too late to hide devices.
with contextlib.suppress(RuntimeError):
  tf.config.set_visible_devices([], 'GPU')

__all__ = ['tf']
