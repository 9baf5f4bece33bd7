"""PreemptionWatch in one process: SIGTERM or SIGINT sets the flag once, a second
signal meets the previous handler, and leaving restores the handlers. (Several
processes, and train.py stopping on a signal: tests/test_train.py.)"""

import os
import signal

import pytest

from resnet_jax import preemption


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_is_noticed_once_then_handlers_restored(signum):
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with preemption.PreemptionWatch() as watch:
    assert not watch.reached(1) and watch.describe() == 'a preemption notice'
    os.kill(os.getpid(), signum)
    assert watch.reached(2) and watch.describe() == signum.name
    assert signal.getsignal(signum) is before[signum]  # A second signal is not caught.
  assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_it_watches_nothing():
  import threading

  result = []

  def body():
    with preemption.PreemptionWatch() as watch:
      result.append(watch.reached(1))

  thread = threading.Thread(target=body)
  thread.start()
  thread.join()
  assert result == [False]
