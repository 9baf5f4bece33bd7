"""train.py and evaluate.py as a user runs them: subprocesses on a tiny synthetic run,
and the training state such a run leaves behind."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from resnet_jax import checkpoint, experiment, parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
  '--config=configs/default.py',
  '--config.data.dataset=synthetic',
  '--config.data.image_size=8',
  '--config.data.train_split=train[:64]',
  '--config.data.eval_split=test[:40]',
  '--config.model.depth=8',
  '--config.model.width=4',
  '--config.train.batch_size=16',
  '--config.train.num_steps=4',
  '--config.train.log_every=2',
  '--config.train.eval_every=2',
  '--config.train.checkpoint_every=2',
  '--config.train.cpu_options=ynn:dot',  # fixed: autotuning is tested in test_autotune.py
]


def tiny(**overrides) -> list[str]:
  """TINY with overrides: tiny(train__num_steps=12) sets --config.train.num_steps=12."""
  flags = dict(arg.split('=', 1) for arg in TINY)
  flags.update({f'--config.{k.replace("__", ".")}': str(v) for k, v in overrides.items()})
  return [f'{k}={v}' for k, v in flags.items()]


def environment(devices: int = 1, **extra) -> dict:
  """The environment of a subprocess with `devices` CPU devices (fixed when JAX starts)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return {**env, **extra}


def command(script: str, *args) -> list[str]:
  """`script` is train.py, evaluate.py, or `-c CODE`."""
  return [sys.executable, *script.split(' ', 1), *args]


def run(script: str, *args, env: dict | None = None, timeout: int = 300):
  return subprocess.run(
    command(script, *args),
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env or environment(),
    timeout=timeout,
  )


def start(script: str, *args, env: dict | None = None) -> subprocess.Popen:
  """A running process; stdout (merged with stderr) is read line by line."""
  return subprocess.Popen(
    command(script, *args),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    cwd=ROOT,
    env=env or environment(),
  )


def restore_state(workdir, config=None):
  """The newest checkpoint of the run in `workdir` (its own config.json by default), in the
  layout of `config`'s model (stacked stages with model.scan)."""
  config = config or checkpoint.load_config(workdir)
  setup = experiment.setup(config, parallel.create_mesh())
  ckpt = checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints', read_only=True)
  state, _ = experiment.restore_checkpoint(ckpt, setup.state, config)
  ckpt.close()
  return state


def assert_same_state(a, b):
  """Bit for bit: step, parameters, BN statistics, optimizer state and RNG."""
  assert int(a.step) == int(b.step)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


_EIGHT_DEVICES = """
import jax, numpy as np
from resnet_jax import inputs, parallel, train_state
{imports}
def run(devices):
  config, mesh = {config}, parallel.create_mesh(devices)
  start = train_state.initialize(
    config, mesh, num_classes={num_classes}, in_channels={in_channels}, steps_per_epoch=2
  )
  train = inputs.train_inputs(config, mesh, start_step=0)
  step = train_state.train_step(config, start, mesh, train.batch_from)
  state = start.state
  for _ in range(2):
    state, step_metrics = step(state, next(train.stream))
  return jax.device_get((state.params, state.batch_stats, step_metrics['loss']))
one, eight = run(jax.devices()[:1]), run(jax.devices())
jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6), one, eight)
print('ok')
"""


def assert_eight_devices_train_as_one(imports: str, config: str, *, num_classes, in_channels):
  """Two train steps of `config` (a Python expression, after `imports`), with its inputs,
  on eight CPU devices give the parameters, BN statistics and loss they give on one."""
  script = _EIGHT_DEVICES.format(
    imports=imports, config=config, num_classes=num_classes, in_channels=in_channels
  )
  result = run('-c ' + script, env=environment(devices=8), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith('ok')
