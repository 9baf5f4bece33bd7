"""Stopping cleanly on notice: SIGTERM (what schedulers send before they evict a
job) or SIGINT (Ctrl-C).

The training loop asks `reached(step)` after each step; on True it saves a
checkpoint of that step and returns, train.py exits 75 (`errors.EXIT_STOPPED`), and
the same command started again resumes the run.

One process: the signal handler only sets a flag. Several processes must stop
at the same step, or the next step's collectives would wait forever for the
ones that left: JAX's multi-controller runtime (`jax.distributed`) hears a
SIGTERM on any process, its coordination service tells the others, and
`multihost_utils.reached_preemption_sync_point` turns True on all of them at
the same step. A Python SIGTERM handler would replace JAX's, so there only
SIGINT gets one, which passes the notice on as a SIGTERM. A second signal
meets the previous handler again: a second Ctrl-C stops at once.
"""

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

from resnet_jax import signal_handlers


class PreemptionWatch:
  """A context manager: signal handlers while training, the previous ones after."""

  def __init__(self):
    self.signal_name = None  # 'SIGTERM' or 'SIGINT' once one arrived at this process
    self._multiprocess = jax.process_count() > 1
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # The only one that may.
      signals = (signal.SIGINT,) if self._multiprocess else (signal.SIGTERM, signal.SIGINT)
      self._previous = signal_handlers.install(self._handle, signals)
    return self

  def __exit__(self, *exc_info):
    signal_handlers.restore(self._previous)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    signal.signal(signum, self._previous[signum])
    if self._multiprocess:
      os.kill(os.getpid(), signal.SIGTERM)

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step` (called once per step, on every process)."""
    if self._multiprocess:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.signal_name is not None

  def describe(self) -> str:
    return self.signal_name or 'a preemption notice'
