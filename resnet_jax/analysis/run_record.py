"""A sweep point's run and its record, `sweep.json` in the point's workdir.

The record holds the train.py command, the status ('running', 'done', 'stopped' or
'failed (exit status N)'), the number of attempts and the wall time of all of them. A
running attempt's wall time is rewritten every `record_every` seconds, and each write
replaces the file whole, so a sweep killed mid-run (a session's end, kill -9) leaves a
readable record that lacks at most that much time.

A SIGTERM or SIGINT to the sweep while a point runs is passed on to its train.py as a
SIGTERM, which saves a checkpoint and exits 75: the point is 'stopped', to resume. (A
container's first process gets a scheduler's SIGTERM alone; Ctrl-C in a terminal
reaches train.py too, and a SIGTERM after a SIGINT is not a second notice.) A train.py
that the notice ended another way (still starting, before it watches for signals) is
'stopped' as well: nothing of it failed.
"""

import contextlib
import json
import os
import pathlib
import shlex
import signal
import subprocess
import time

from resnet_jax import cli

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


@contextlib.contextmanager
def _notices_passed_to(process: subprocess.Popen):
  """While inside, a SIGTERM or SIGINT to this process is sent on to `process` as SIGTERM;
  yields the list of the notices received. (Python's handlers: main thread only.)"""
  received = []

  def pass_on(signum, frame):
    del frame
    received.append(signum)
    process.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def _status(returncode: int) -> str:
  if returncode == 0:
    return 'done'
  return 'stopped' if returncode == cli.EXIT_STOPPED else f'failed (exit status {returncode})'


def run(command: list[str], workdir: pathlib.Path, record_every: float = 60.0) -> int:
  """Runs one point to its end, failure or stop, its output appended to workdir/train.log;
  returns its exit status."""
  workdir.mkdir(parents=True, exist_ok=True)
  record = read(workdir)
  earlier_seconds = record.get('wall_seconds', 0.0)
  record.update(command=shlex.join(command), attempts=record.get('attempts', 0) + 1)
  start = time.monotonic()
  env = {'TF_CPP_MIN_LOG_LEVEL': '2', **os.environ}
  with (workdir / 'train.log').open('a') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    returncode = None
    with _notices_passed_to(process) as notices:
      while returncode is None:
        record.update(status='running', wall_seconds=earlier_seconds + time.monotonic() - start)
        _write(workdir, record)
        with contextlib.suppress(subprocess.TimeoutExpired):
          returncode = process.wait(timeout=record_every)
  if notices and returncode != 0:
    returncode = cli.EXIT_STOPPED
  record.update(status=_status(returncode), wall_seconds=earlier_seconds + time.monotonic() - start)
  _write(workdir, record)
  return returncode
