"""Picks how a step compiles on XLA:CPU by timing the candidates on this machine, once.

`tuned(build, ...)` returns the step to call. On CPU with `train.cpu_options =
'autotune'`, its first call compiles each candidate of `compiler.candidates` (the
YNNPACK fusion sets; then the other 1x1 formulation with the fastest of them), runs
each a few steps on copies of that call's arguments (the run's own state and batch
stay untouched, so a resumed run stays exact), and keeps the fastest. The choice is
cached on disk, keyed by the CPU, the XLA version and the step's signature (network,
shapes, devices), so only a machine's first run of a step pays; the log says what was
chosen and every candidate's images/s. Several processes (hosts) time together and all
take process 0's choice.

The cache is `$XDG_CACHE_HOME/resnet_jax/xla_cpu_choices.json` (~/.cache by default;
the file `$RESNET_JAX_CPU_CHOICES` names, where set): one JSON file, rewritten whole
under a lock and renamed into place, so processes that write at once leave a readable
file. A file that is not one (corrupt, or another program's) is set aside as
`<name>.bad` with a warning, and the step is timed again.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from resnet_jax import compiler, parallel

CACHE_FORMAT = 'resnet_jax/xla_cpu_choices/1'
WARMUP_STEPS = 1
# Each candidate is timed over at least MIN_TIMED_STEPS steps, and more while they add up to
# under MIN_TIMED_S (up to MAX_TIMED_STEPS): a 0.25 s step is timed 8 times, a 10 s one twice.
MIN_TIMED_STEPS, MAX_TIMED_STEPS, MIN_TIMED_S = 2, 10, 2.0
# A candidate whose warm-up step is this much slower than the fastest timed step so far
# is not timed further: no noise makes up for it.
HOPELESS = 2.0


CACHE_VARIABLE = 'RESNET_JAX_CPU_CHOICES'  # a path for the cache file, where set


def default_cache_path() -> pathlib.Path:
  if os.environ.get(CACHE_VARIABLE):
    return pathlib.Path(os.environ[CACHE_VARIABLE])
  cache_home = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return pathlib.Path(cache_home) / 'resnet_jax' / 'xla_cpu_choices.json'


def cpu_name() -> str:
  """The CPU model and the cores this process may use: what a choice depends on. A
  hypervisor often reports a bare 'Intel(R) Xeon(R) Processor', so family, model and
  stepping are named too."""
  fields = {}
  with contextlib.suppress(OSError), open('/proc/cpuinfo') as cpuinfo:
    for line in cpuinfo:
      if not line.strip():
        break  # The first processor's block is enough.
      name, _, value = line.partition(':')
      fields[name.strip()] = value.strip()
  model = fields.get('model name') or os.uname().machine
  if 'cpu family' in fields:
    model += f' (family {fields["cpu family"]}, model {fields.get("model")}, '
    model += f'stepping {fields.get("stepping")})'
  return f'{model}, {len(os.sched_getaffinity(0))} cores'


class ChoiceCache:
  """Choices on disk by key: {'format': CACHE_FORMAT, 'choices': {key: entry}}."""

  def __init__(self, path: pathlib.Path):
    self.path = pathlib.Path(path)

  def get(self, key: str) -> dict | None:
    entry = self._read().get(key)
    if entry is None:
      return None
    try:
      choice = compiler.Choice(**entry['choice'])
      choice.compiler_options()  # a ConfigError (a ValueError) for an unknown fusion set
      measured = str(choice) in entry['images_per_s'] and 'timed_on' in entry
      if choice.conv1x1 not in ('einsum', 'conv') or not measured:
        raise ValueError(choice)
    except (TypeError, KeyError, ValueError):
      logging.warning('%s: unknown choice %r for %s; timing again', self.path, entry, key)
      return None
    return entry

  def put(self, key: str, entry: dict) -> None:
    """Adds `entry` under the lock; a cache that cannot be written costs a warning only."""
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      with open(self.path.with_name(self.path.name + '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        choices = self._read()
        choices[key] = entry
        text = json.dumps({'format': CACHE_FORMAT, 'choices': choices}, indent=1, sort_keys=True)
        with tempfile.NamedTemporaryFile(
          'w', dir=self.path.parent, prefix=self.path.name, suffix='.tmp', delete=False
        ) as temporary:
          temporary.write(text)
        os.replace(temporary.name, self.path)
    except OSError as e:
      logging.warning('could not cache the XLA:CPU choice in %s: %s', self.path, e)

  def _read(self) -> dict:
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return {}
    except OSError as e:
      logging.warning('cannot read %s (%s): timing the step again', self.path, e)
      return {}
    try:
      content = json.loads(text)
      if content.get('format') != CACHE_FORMAT or not isinstance(content.get('choices'), dict):
        raise ValueError(f'not a {CACHE_FORMAT} file')
      return content['choices']
    except (ValueError, AttributeError) as e:
      aside = self.path.with_name(self.path.name + '.bad')
      logging.warning(
        '%s is not a cache of XLA:CPU choices (%s): moved to %s, timing the step again',
        self.path,
        e,
        aside,
      )
      with contextlib.suppress(OSError):
        os.replace(self.path, aside)
      return {}


def tuned(
  build: Callable[[compiler.Choice], Callable],
  *,
  step: str,
  model_config,
  cpu_options: str,
  mesh: jax.sharding.Mesh,
  donates_first_argument: bool,
  cache: ChoiceCache | None = None,
) -> 'TunedStep':
  """The step `build(choice)` (a jitted function) for the choice the config fixes, or, on
  CPU with cpu_options='autotune', for the fastest choice, timed at the first call."""
  return TunedStep(
    build,
    step=step,
    fixed=compiler.fixed_choice(cpu_options, model_config.conv1x1, parallel.platform(mesh)),
    model_config=model_config,
    donates_first_argument=donates_first_argument,
    cache=cache or ChoiceCache(default_cache_path()),
  )


class TunedStep:
  """A step that picks its compilation at its first call, unless it is `fixed` (see the
  module docstring). `choice` says which it took."""

  def __init__(self, build, *, step, fixed, model_config, donates_first_argument, cache):
    self._build = build
    self._step = step
    self._model_config = model_config
    self._donates = donates_first_argument
    self._cache = cache
    self._jitted = None
    self.choice: compiler.Choice | None = fixed
    self.images_per_s: dict[str, float] = {}  # Of each candidate timed here.

  def jitted(self, *args) -> Callable:
    """The jitted step for arguments like `args`, chosen at the first call."""
    if self._jitted is None:
      if self.choice is None:
        self.choice = self._choose(args)
      self._jitted = self._build(self.choice)
    return self._jitted

  def __call__(self, *args):
    return self.jitted(*args)(*args)

  def _choose(self, args) -> compiler.Choice:
    key = self._key(args)
    entry = self._cache.get(key) if jax.process_index() == 0 else None
    cached = _from_process_0(entry is not None)
    if cached:
      choice = _choice_of_process_0(compiler.Choice(**entry['choice']) if entry else None)
      if entry:
        _print(
          f'{self._step} step on XLA:CPU: {choice} ({entry["images_per_s"][str(choice)]:.1f} '
          f'img/s, the fastest of {len(entry["images_per_s"])} timed on {entry["timed_on"]}; '
          f'cached in {self._cache.path})'
        )
      return choice

    started = time.perf_counter()
    choices = compiler.candidates(self._model_config.conv1x1)
    seconds = {}
    for choice in choices:
      seconds[choice] = self._seconds_per_step(choice, args, min(seconds.values(), default=None))
    fastest = _choice_of_process_0(min(seconds, key=seconds.get))  # all processes time the same
    if self._model_config.conv1x1 == 'auto':
      other = compiler.Choice(fastest.fusions, 'conv')
      seconds[other] = self._seconds_per_step(other, args, seconds[fastest])
    examples = _examples_per_step(args)
    self.images_per_s = {str(c): examples / s for c, s in seconds.items()}
    choice = _choice_of_process_0(min(seconds, key=seconds.get))
    tuning_s = time.perf_counter() - started
    if jax.process_index() == 0:
      self._cache.put(
        key,
        {
          'choice': {'fusions': choice.fusions, 'conv1x1': choice.conv1x1},
          'images_per_s': {c: round(v, 2) for c, v in self.images_per_s.items()},
          'timed_on': datetime.date.today().isoformat(),
          'tuning_s': round(tuning_s, 1),
        },
      )
    measured = '; '.join(f'{c} {v:.1f}' for c, v in self.images_per_s.items())
    _print(
      f'{self._step} step on XLA:CPU: timed {len(seconds)} ways in {tuning_s:.0f} s '
      f'(img/s: {measured}): chose {choice}; cached in {self._cache.path}'
    )
    return choice

  def _seconds_per_step(self, choice, args, fastest: float | None) -> float:
    """The median seconds of the timed steps after WARMUP_STEPS, on copies of the arguments."""
    compiled = self._build(choice).lower(*args).compile()
    if self._donates:
      args = (jax.tree.map(jnp.copy, args[0]), *args[1:])
    times = []
    while _more_steps(times):
      start = time.perf_counter()
      outputs = jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - start)
      if self._donates:
        args = (outputs[0], *args[1:])
      hopeless = fastest is not None and times[-1] > HOPELESS * fastest
      # Processes run their steps together: one alone cannot cut its timing short.
      if len(times) == WARMUP_STEPS and hopeless and jax.process_count() == 1:
        return times[-1]
    return statistics.median(times[WARMUP_STEPS:])

  def _key(self, args) -> str:
    """CPU | XLA version | step | a digest of the network and the arguments' shapes,
    dtypes and shardings, and the processes."""
    signature = json.dumps(
      {
        'model': self._model_config.to_dict(),
        'arguments': str(jax.tree.map(_aval, args)),
        'processes': jax.process_count(),
      },
      sort_keys=True,
      default=str,
    )
    digest = hashlib.sha256(signature.encode()).hexdigest()[:16]
    return f'{cpu_name()} | jaxlib {jaxlib.__version__} | {self._step} {digest}'


def _more_steps(times: list[float]) -> bool:
  """Whether to run another step, given the seconds of those run (warm-up first)."""
  timed = times[WARMUP_STEPS:]
  if len(timed) < MIN_TIMED_STEPS:
    return True
  return len(timed) < MAX_TIMED_STEPS and _from_process_0(sum(timed) < MIN_TIMED_S)


def _aval(x) -> str:
  sharding = getattr(x, 'sharding', None)
  spec = getattr(sharding, 'spec', '')
  return f'{jnp.shape(x)} {jnp.result_type(x)} {spec}'


def _examples_per_step(args) -> int:
  """The batch is each step's last argument; a 10-crop eval batch counts its examples."""
  return int(args[-1]['label'].shape[0])


def _from_process_0(flag: bool) -> bool:
  """Process 0's `flag`, on every process."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _choice_of_process_0(choice: compiler.Choice | None) -> compiler.Choice:
  """Process 0's choice, on every process (the others pass None or their own)."""
  if jax.process_count() == 1:
    return choice
  text = json.dumps(dataclasses.asdict(choice)) if choice else ''
  padded = np.zeros(256, np.uint8)
  padded[: len(text)] = np.frombuffer(text.encode(), np.uint8)
  received = np.asarray(multihost_utils.broadcast_one_to_all(padded)).tobytes()
  return compiler.Choice(**json.loads(received.rstrip(b'\0').decode()))


def _print(line: str) -> None:
  if jax.process_index() == 0:
    print(line, flush=True)
