"""train.py as a user runs it, and what goes wrong around it: bad input (one line, a
non-zero exit status, no traceback), SIGTERM and SIGINT, kill -9 at any moment, a full
disk, and one device = eight devices = two hosts of four."""

import random
import re
import signal
import socket
import time

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint, defaults, experiment, metrics, parallel
from resnet_jax.errors import EXIT_STOPPED
from tests.entry_points import (
  assert_same_state,
  environment,
  restore_state,
  run,
  start,
  tiny,
)

RESUMABLE = tiny(
  train__num_steps=12,
  train__log_every=1,
  train__eval_every=6,
  train__checkpoint_every=3,
  train__keep_checkpoints=2,
)

# Runs train.py with a fault: FAULT=slow:SECONDS (a pause before each step, time to
# send signals), lag:SECONDS (a pause on the device after each step, which prints
# 'device done with step N' first), kill_in_step:N (SIGKILL while step N computes),
# kill_in_write:N (SIGKILL once part of checkpoint N is written), kill_before_commit:N
# (SIGKILL with checkpoint N written, before orbax renames it into place).
_FAULTY_TRAIN_PY = """
import os, signal, time
import jax
from jax.experimental import io_callback
from resnet_jax.commands import train
from orbax.checkpoint._src.path import atomicity
from orbax.checkpoint._src.serialization import serialization
from resnet_jax import train_state

fault, at = os.environ['FAULT'].split(':')
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)

def device_lag(step):
  print(f'device done with step {int(step)}', flush=True)
  time.sleep(float(at))
  return step

@jax.jit
def lagged(state):  # The next step waits for this one's state.step: it runs after the lag.
  step = io_callback(device_lag, jax.ShapeDtypeStruct((), state.step.dtype), state.step)
  return state.replace(step=step)

make_train_step = train_state.make_train_step
write = serialization.async_serialize_from_host
finalize = atomicity.AtomicRenameTemporaryPath.finalize

def faulty_make_train_step(*args, **kwargs):
  train_step = make_train_step(*args, **kwargs)
  def faulty_step(state, batch):
    if fault == 'slow':
      time.sleep(float(at))
    # Reading the step waits for the one before: only the fault that needs it does.
    killing = fault == 'kill_in_step' and int(state.step) + 1 == int(at)
    out = train_step(state, batch)
    if fault == 'lag':
      out = (lagged(out[0]), out[1])
    if killing:
      kill()
    return out
  return faulty_step

async def faulty_write(replica_slices, spec, **kwargs):
  result = await write(replica_slices, spec, **kwargs)
  if fault == 'kill_in_write' and f'/{at}.orbax-checkpoint-tmp/' in str(spec):
    kill()
  return result

async def faulty_finalize(self):
  if fault == 'kill_before_commit' and self.get_final().name == at:
    kill()
  return await finalize(self)

train_state.make_train_step = faulty_make_train_step
serialization.async_serialize_from_host = faulty_write
atomicity.AtomicRenameTemporaryPath.finalize = faulty_finalize
train.run()
"""


def faulty_train_py(fault: str, *args, devices: int = 1):
  return start('-c ' + _FAULTY_TRAIN_PY, *args, env=environment(devices, FAULT=fault))


def read_until(process, text: str) -> str:
  """Reads the process's output up to the first line holding `text`."""
  seen = []
  for line in process.stdout:
    seen.append(line)
    if text in line:
      return ''.join(seen)
  process.wait()
  raise AssertionError(f'no line with {text!r} in:\n{"".join(seen)[-3000:]}')


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """The state at the end of RESUMABLE run straight through."""
  workdir = tmp_path_factory.mktemp('uninterrupted')
  result = run('train.py', *RESUMABLE, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return restore_state(workdir)


# ------------------------------------------------------------------------------ bad input

# name: (train.py's arguments past tiny(), devices, the one line on stderr after 'error: ').
# Exit status 2 for each. The rest of the bad input (an impossible depth, shortcut or
# variant, a dataset not prepared, an unknown split, a workdir of another model or not
# writable) raises the ConfigError that makes such a line in tests/test_trainer.py, and
# evaluate.py's in tests/test_evaluate.py.
BAD_INPUTS = {
  'unknown config key': (
    ['--config.train.batchsize=8'],
    1,
    "--config.train.batchsize=8: the config has no field 'batchsize' "
    '(did you mean "batch_size"?)',
  ),
  'value of the wrong type': (
    ['--config.train.batch_size=eight'],
    1,
    "flag --config.train.batch_size=eight: invalid literal for int() with base 10: 'eight'",
  ),
  'config file that does not load': (
    ['--config=configs/nope.py'],
    1,
    "--config: the config file does not load: No such file or directory: 'configs/nope.py'",
  ),
  'batch that does not divide by the devices': (
    ['--config.train.batch_size=12'],
    8,
    'train.batch_size=12 does not split over 8 devices; use a multiple of 8',
  ),
}


@pytest.mark.parametrize('name', BAD_INPUTS)
def test_bad_input_is_one_line_and_a_nonzero_status(tmp_path, name):
  args, devices, line = BAD_INPUTS[name]
  result = run('train.py', *tiny(), f'--workdir={tmp_path}', *args, env=environment(devices))
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines() == [f'error: {line}'], result.stderr[-3000:]
  assert result.stdout == ''


def test_verbose_shows_the_traceback(tmp_path):
  result = run(
    'train.py', *tiny(), f'--workdir={tmp_path}', '--config.train.batchsize=8', '--verbose'
  )
  assert result.returncode == 2
  assert 'Traceback (most recent call last)' in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: --config.train.batchsize=8')


# ------------------------------------------------------------------------------ signals


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_saves_exits_75_and_the_same_command_finishes_the_same_run(
  uninterrupted, tmp_path, signum
):
  args = [*RESUMABLE, f'--workdir={tmp_path}']
  process = faulty_train_py('slow:0.3', *args)
  read_until(process, 'step 4/12')
  process.send_signal(signum)
  output = read_until(process, 'stopped after step')
  assert process.wait(timeout=120) == EXIT_STOPPED, output
  stopped = int(
    re.search(rf'{signum.name}: stopped after step (\d+) with its checkpoint', output)[1]
  )
  assert 4 <= stopped < 12
  assert checkpoint.Checkpointer(tmp_path / 'checkpoints', read_only=True).latest_step() == stopped
  result = run('train.py', *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'at step {stopped}' in result.stdout
  assert_same_state(restore_state(tmp_path), uninterrupted)


@pytest.mark.slow
def test_a_notice_stops_within_two_steps_of_the_device(tmp_path):
  """After the step the device is on or the next, not the `log_every` steps the host can queue."""
  args = tiny(
    train__num_steps=300, train__log_every=300, train__eval_every=300, train__checkpoint_every=300
  )
  process = faulty_train_py('lag:0.5', *args, f'--workdir={tmp_path}')
  read_until(process, 'device done with step 5\n')
  process.send_signal(signal.SIGTERM)
  output = read_until(process, 'stopped after step')
  assert process.wait(timeout=120) == EXIT_STOPPED, output
  stopped = int(re.search(r'stopped after step (\d+)', output)[1])
  assert 5 <= stopped <= 7, output


# ------------------------------------------------------------------------------ kill -9


def _finish(args, workdir, uninterrupted):
  result = run('train.py', *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert_same_state(restore_state(workdir), uninterrupted)
  assert not list((workdir / 'checkpoints').glob('*tmp*'))  # Leftovers were cleaned up.


@pytest.mark.slow
@pytest.mark.parametrize(
  'fault', ['kill_in_step:5', 'kill_in_write:6', 'kill_before_commit:9', 'kill_in_write:12']
)
def test_kill_9_then_the_same_command_ends_bit_for_bit_as_uninterrupted(
  uninterrupted, tmp_path, fault
):
  args = [*RESUMABLE, f'--workdir={tmp_path}']
  process = faulty_train_py(fault, *args)
  output = process.communicate(timeout=300)[0]
  assert process.returncode == -signal.SIGKILL, output[-3000:]
  _finish(args, tmp_path, uninterrupted)


@pytest.mark.slow
def test_kill_9_at_random_moments(uninterrupted, tmp_path):
  args = [*RESUMABLE, f'--workdir={tmp_path}']
  chance = random.Random(0)
  for _ in range(4):
    process = faulty_train_py('slow:0.05', *args)
    read_until(process, 'training 12 steps')
    time.sleep(chance.uniform(0, 1.5))
    process.kill()
    process.communicate()
  _finish(args, tmp_path, uninterrupted)


# ------------------------------------------------------------------------------ full disk


def _config(args):
  """The config that train.py makes of `args` (--config.SECTION.FIELD=VALUE overrides)."""
  config = defaults.get_config()
  for arg in args:
    if arg.startswith('--config.'):
      key, value = arg.removeprefix('--config.').split('=', 1)
      section, field = key.split('.')
      config[section][field] = type(config[section][field])(value)
  return config


@pytest.mark.slow
def test_full_disk(small_disk):
  """Too little space for one checkpoint: an error before training. Space for one and a
  half: the second save fails, and the first stays good."""
  args = tiny(model__width=32, train__num_steps=8, train__log_every=1, train__checkpoint_every=2)
  state = experiment.setup(_config(args), parallel.create_mesh()).state
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  too_small = small_disk(state_bytes // 2)
  result = run('train.py', *args, f'--workdir={too_small}')
  assert result.returncode == 2 and 'MiB free, less than one checkpoint' in result.stderr
  disk = small_disk(state_bytes * 3 // 2)
  result = run('train.py', *args, f'--workdir={disk}')
  assert result.returncode == 1
  assert 'No space left on device' in result.stderr.strip().splitlines()[-1]
  assert checkpoint.Checkpointer(disk / 'checkpoints', read_only=True).all_steps() == [2]
  assert int(restore_state(disk).step) == 2


# ------------------------------------------------------------------------------ scale


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def two_hosts(args, fault='slow:0'):
  """train.py as two processes of four CPU devices each, joined by jax.distributed."""
  coordinator = f'--coordinator_address=localhost:{_free_port()}'
  return [
    faulty_train_py(fault, *args, coordinator, '--num_processes=2', f'--process_id={i}', devices=4)
    for i in (0, 1)
  ]


def _losses(workdir):
  train = [(r['step'], r['loss']) for r in metrics.read_metrics(workdir, 'train')]
  evals = [(r['step'], r['loss'], r['top1']) for r in metrics.read_metrics(workdir, 'eval')]
  return np.asarray(train), np.asarray(evals)


@pytest.mark.slow
def test_one_device_eight_devices_and_two_hosts_train_alike(tmp_path):
  args = [
    *tiny(train__num_steps=8, train__log_every=1, train__eval_every=4),
    '--config.model.bn_group_size=4',
  ]
  one, eight, hosts = tmp_path / 'one', tmp_path / 'eight', tmp_path / 'hosts'
  assert run('train.py', *args, f'--workdir={one}').returncode == 0
  result = run('train.py', *args, f'--workdir={eight}', env=environment(8))
  assert result.returncode == 0, result.stderr[-3000:]
  processes = two_hosts([*args, f'--workdir={hosts}'])
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert 'on 8 device(s)' in outputs[0]
  for a, b in ((one, eight), (eight, hosts)):
    for x, y in zip(_losses(a), _losses(b), strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-5)
  close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, restore_state(one), restore_state(hosts))
  jax.tree.map(close, restore_state(eight), restore_state(hosts))


@pytest.mark.slow
def test_sigterm_to_one_host_stops_both_at_the_same_step(tmp_path):
  args = [*RESUMABLE, f'--workdir={tmp_path}']
  first, second = two_hosts(args, fault='slow:0.3')
  read_until(first, 'step 3/12')
  second.send_signal(signal.SIGTERM)
  output = read_until(first, 'stopped after step')
  assert [p.wait(timeout=120) for p in (first, second)] == [EXIT_STOPPED] * 2, output
  stopped = int(re.search(r'a preemption notice: stopped after step (\d+)', output)[1])
  assert checkpoint.Checkpointer(tmp_path / 'checkpoints', read_only=True).latest_step() == stopped
  again = two_hosts(args)
  outputs = [p.communicate(timeout=300)[0] for p in again]
  assert [p.returncode for p in again] == [0, 0], outputs[0][-3000:]
  assert f'resumed from {tmp_path / "checkpoints"} at step {stopped}' in outputs[0]
  assert int(restore_state(tmp_path).step) == 12
