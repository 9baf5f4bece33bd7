"""A sweep point's run and its record, `sweep.json` in the point's workdir.

The record holds the train.py command, the status ('running', 'done', 'stopped' or
'failed (exit status N)'), the number of attempts and the wall time of all of them. A
running attempt's wall time is rewritten every `record_every` seconds, and each write
replaces the file whole, so a sweep killed mid-run (a session's end, kill -9) leaves a
readable record that lacks at most that much time.

A SIGTERM or SIGINT to the sweep (`Notices`, held for the whole grid) is passed on to
the running point's train.py as a SIGTERM, which saves a checkpoint and exits 75: the
point is 'stopped', to resume. (A container's first process gets a scheduler's SIGTERM
alone; Ctrl-C in a terminal reaches train.py too, and a SIGTERM after a SIGINT is not a
second notice.) A train.py that the notice ended another way (still starting, before it
watches for signals) is 'stopped' as well: nothing of it failed. A notice that comes
between two points is kept: the sweep starts no further point.
"""

import contextlib
import json
import os
import pathlib
import shlex
import signal
import subprocess
import time

from resnet_jax import signal_handlers
from resnet_jax.errors import EXIT_STOPPED

FILENAME = 'sweep.json'


def read(workdir) -> dict:
  """The record in `workdir` (a pathlib or etils path), {} where there is none."""
  path = workdir / FILENAME
  return json.loads(path.read_text()) if path.exists() else {}


def _write(workdir: pathlib.Path, record: dict):
  partial = workdir / f'{FILENAME}.partial'
  partial.write_text(json.dumps(record, indent=2) + '\n')
  partial.replace(workdir / FILENAME)


def is_done(workdir: pathlib.Path) -> bool:
  return read(workdir).get('status') == 'done'


class Notices:
  """A context manager: the sweep's SIGTERM and SIGINT handler, the previous ones after.

  Each notice is passed on as a SIGTERM to the train.py `passed_to` names, if one runs;
  one that comes while none does (between two points, or while one starts) is counted,
  and the next train.py is told at once. (Python's handlers: main thread only.)
  """

  def __init__(self):
    self.received = 0
    self._running = None  # the train.py process told of each notice
    self._untold = 0  # notices that came while none ran
    self._previous = {}

  def __enter__(self):
    self._previous = signal_handlers.install(self._handle, (signal.SIGTERM, signal.SIGINT))
    return self

  def __exit__(self, *exc_info):
    signal_handlers.restore(self._previous)
    self._previous = {}

  def _handle(self, signum, frame):
    del signum, frame
    self.received += 1
    running = self._running
    if running is None:
      self._untold += 1
    else:
      running.send_signal(signal.SIGTERM)

  @contextlib.contextmanager
  def passed_to(self, process: subprocess.Popen):
    """While inside, notices go on to `process`; it is told once of those that came before."""
    self._running = process
    if self._untold:
      self._untold = 0
      process.send_signal(signal.SIGTERM)
    try:
      yield
    finally:
      self._running = None


def _status(returncode: int) -> str:
  if returncode == 0:
    return 'done'
  return 'stopped' if returncode == EXIT_STOPPED else f'failed (exit status {returncode})'


def run(
  command: list[str], workdir: pathlib.Path, notices: Notices, record_every: float = 60.0
) -> int:
  """Runs one point to its end, failure or stop, its output appended to workdir/train.log;
  returns its exit status (75 where it failed after a notice)."""
  workdir.mkdir(parents=True, exist_ok=True)
  record = read(workdir)
  earlier_seconds = record.get('wall_seconds', 0.0)
  record.update(command=shlex.join(command), attempts=record.get('attempts', 0) + 1)
  start = time.monotonic()
  env = {'TF_CPP_MIN_LOG_LEVEL': '2', **os.environ}
  with (workdir / 'train.log').open('a') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    returncode = None
    with notices.passed_to(process):
      while returncode is None:
        record.update(status='running', wall_seconds=earlier_seconds + time.monotonic() - start)
        _write(workdir, record)
        with contextlib.suppress(subprocess.TimeoutExpired):
          returncode = process.wait(timeout=record_every)
  if notices.received and returncode != 0:
    returncode = EXIT_STOPPED
  record.update(status=_status(returncode), wall_seconds=earlier_seconds + time.monotonic() - start)
  _write(workdir, record)
  return returncode
