"""TensorFlow for the input pipeline only: quiet, and blind to accelerators.

Importing `tf` from here (not `tensorflow` directly) guarantees that TF hides
every GPU before it builds anything, so tf.data never takes accelerator memory
that JAX needs.
"""

import contextlib
import os
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


@contextlib.contextmanager
def _quiet_stderr():
  """Holds back what C++ code writes to stderr (TF's start-up notices, which
  TF_CPP_MIN_LOG_LEVEL does not reach); replays it if the block fails."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile('w+') as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      held.seek(0)
      sys.stderr.write(held.read())
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


with _quiet_stderr():
  import tensorflow as tf

# RuntimeError: TF was initialized elsewhere first; then it is too late to hide devices.
with contextlib.suppress(RuntimeError):
  tf.config.set_visible_devices([], 'GPU')

__all__ = ['tf']
