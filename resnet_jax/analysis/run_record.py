"""A sweep point's run and its record, `sweep.json` in the point's workdir.

The record holds the train.py command, the status ('running', 'done' or 'failed (exit
status N)'), the number of attempts and the wall time of all of them. A running
attempt's wall time is rewritten every `record_every` seconds, and each write replaces
the file whole, so a sweep killed mid-run (preemption, a session's end) leaves a
readable record that lacks at most that much time.
"""

import contextlib
import json
import os
import pathlib
import shlex
import subprocess
import time

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


def run(command: list[str], workdir: pathlib.Path, record_every: float = 60.0) -> int:
  """Runs one point to its end (or failure), its output appended to workdir/train.log."""
  workdir.mkdir(parents=True, exist_ok=True)
  record = read(workdir)
  earlier_seconds = record.get('wall_seconds', 0.0)
  record.update(command=shlex.join(command), attempts=record.get('attempts', 0) + 1)
  start = time.monotonic()
  env = {'TF_CPP_MIN_LOG_LEVEL': '2', **os.environ}
  with (workdir / 'train.log').open('a') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    returncode = None
    while returncode is None:
      record.update(status='running', wall_seconds=earlier_seconds + time.monotonic() - start)
      _write(workdir, record)
      with contextlib.suppress(subprocess.TimeoutExpired):
        returncode = process.wait(timeout=record_every)
  record.update(
    status='done' if returncode == 0 else f'failed (exit status {returncode})',
    wall_seconds=earlier_seconds + time.monotonic() - start,
  )
  _write(workdir, record)
  return returncode
