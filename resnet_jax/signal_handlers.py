"""Python signal handlers held for a while: train.py's preemption watch and the sweep's
notices install theirs on entering and put the previous ones back on leaving. (Python runs
handlers in the main thread only, and only it may install them.)"""

import signal


def install(handler, signums) -> dict:
  """`handler` for each signal of `signums`; returns the handlers it replaced, for `restore`."""
  return {signum: signal.signal(signum, handler) for signum in signums}


def restore(previous: dict) -> None:
  for signum, handler in previous.items():
    signal.signal(signum, handler)
