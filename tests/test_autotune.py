"""The CPU autotuner: it keeps the fastest candidate, caches the choice safely, leaves the
run's own state alone, and steps aside where the config or XLA_FLAGS fix the choice."""

import json
import multiprocessing
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import autotune, compiler, defaults, parallel, train_state
from tests.entry_points import ROOT, environment, start, tiny


class FakeStep:
  """Stands in for a jitted step (and its lowered and compiled forms) that takes `seconds`
  per call, counting its calls."""

  def __init__(self, seconds: float):
    self.seconds, self.calls = seconds, 0

  def lower(self, *args):
    return self

  def compile(self):
    return self

  def __call__(self, state, batch):
    self.calls += 1
    time.sleep(self.seconds)
    return jax.tree.map(lambda x: x + 1, state), {'loss': jnp.zeros(())}


def fake_build(seconds: dict, default: float = 0.02):
  """build(choice) -> a FakeStep taking seconds[str(choice)] (else `default`); `built` lists
  the steps in the order they were built."""
  built = []

  def build(choice):
    built.append((choice, FakeStep(seconds.get(str(choice), default))))
    return built[-1][1]

  return build, built


def fake_args(batch_size=8):
  return {'w': jnp.zeros(3)}, {'label': np.zeros(batch_size, np.int32)}


def tune(build, cache_path, cpu_options='autotune', conv1x1='auto', step='train'):
  model_config = defaults.get_config().model
  model_config.conv1x1 = conv1x1
  return autotune.tuned(
    build,
    step=step,
    model_config=model_config,
    cpu_options=cpu_options,
    mesh=parallel.create_mesh(),
    donates_first_argument=True,
    cache=autotune.ChoiceCache(cache_path),
  )


def test_the_fastest_candidate_is_kept_then_read_from_the_cache(tmp_path, capsys):
  build, built = fake_build(
    {'ynn:dot,reduce, 1x1 as einsum': 0.01, 'ynn:dot,reduce, 1x1 as conv': 0.005}
  )
  state, batch = fake_args()
  step = tune(build, tmp_path / 'choices.json')
  new_state, _ = step(state, batch)

  assert step.choice == compiler.Choice('ynn:dot,reduce', 'conv')
  # Every fusion set with the CPU's einsum, then the fastest set's with the other 1x1.
  timed = [str(c) for c, _ in built[:-1]]
  assert timed == [str(c) for c in compiler.candidates('auto')] + ['ynn:dot,reduce, 1x1 as conv']
  assert built[-1][0] == step.choice  # then the step itself
  assert step.images_per_s['ynn:dot,reduce, 1x1 as conv'] == pytest.approx(8 / 0.005, rel=0.5)
  assert max(step.images_per_s, key=step.images_per_s.get) == str(step.choice)
  # Timing ran on copies chained from the run's state: the run's first step starts from it.
  assert float(new_state['w'][0]) == 1.0
  log = capsys.readouterr().out
  assert 'train step on XLA:CPU: timed 6 ways' in log and 'chose ynn:dot,reduce, 1x1 as conv' in log

  build, built = fake_build({})  # Now every candidate would be as fast: the cache decides.
  again = tune(build, tmp_path / 'choices.json')
  again(*fake_args())
  assert again.choice == step.choice and [c for c, _ in built] == [step.choice]
  assert again.images_per_s == {}
  assert 'the fastest of 6 timed on' in capsys.readouterr().out


def test_a_hopeless_candidate_is_not_timed_past_its_warm_up(tmp_path):
  build, built = fake_build({'ynn:dot, 1x1 as einsum': 0.01, 'xla, 1x1 as einsum': 0.1})
  tune(build, tmp_path / 'choices.json')(*fake_args())
  calls = {str(choice): fake.calls for choice, fake in built[:-1]}
  assert calls['ynn:dot, 1x1 as einsum'] == autotune.WARMUP_STEPS + autotune.MAX_TIMED_STEPS
  assert calls['xla, 1x1 as einsum'] == autotune.WARMUP_STEPS


@pytest.mark.parametrize(
  'seconds, timed', [(0.01, autotune.MAX_TIMED_STEPS), (0.25, 8), (1.5, autotune.MIN_TIMED_STEPS)]
)
def test_short_steps_are_timed_more_often_than_long_ones(seconds, timed):
  times = []
  while autotune._more_steps(times):
    times.append(seconds)
  assert len(times) == autotune.WARMUP_STEPS + timed


def test_a_formulation_the_config_names_is_kept(tmp_path):
  build, built = fake_build({})
  step = tune(build, tmp_path / 'choices.json', conv1x1='conv')
  step(*fake_args())
  assert {choice.conv1x1 for choice, _ in built} == {'conv'}
  assert len(step.images_per_s) == len(compiler.FUSION_CANDIDATES)


@pytest.mark.parametrize('cpu_options', ['ynn:dot', 'xla'])
def test_a_fixed_choice_times_nothing(tmp_path, cpu_options):
  build, built = fake_build({})
  step = tune(build, tmp_path / 'choices.json', cpu_options=cpu_options)
  step(*fake_args())
  assert [c for c, _ in built] == [compiler.Choice(cpu_options, 'auto')]
  assert not (tmp_path / 'choices.json').exists()


def test_xla_flags_naming_the_fusions_win(tmp_path, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  build, built = fake_build({})
  tune(build, tmp_path / 'choices.json')(*fake_args())
  assert [c for c, _ in built] == [compiler.Choice('xla', 'auto')]  # no options: the flag's


def test_the_key_names_the_cpu_and_xla_and_changes_with_the_step(tmp_path, monkeypatch):
  path = tmp_path / 'choices.json'
  tune(fake_build({})[0], path)(*fake_args())
  (key,) = json.loads(path.read_text())['choices']
  assert autotune.cpu_name() in key and f'jaxlib {jax.__version__}' in key

  for change in (
    lambda: tune(fake_build({})[0], path)(*fake_args(batch_size=16)),  # another batch
    lambda: tune(fake_build({})[0], path, step='eval')(*fake_args()),  # another step
    lambda: tune(fake_build({})[0], path, conv1x1='conv')(*fake_args()),  # another network
  ):
    change()
  monkeypatch.setattr(autotune, 'cpu_name', lambda: 'Another CPU, 64 cores')
  build, built = fake_build({})
  tune(build, path)(*fake_args())  # another machine's choices are not this one's
  assert len(built) > 1
  assert len(json.loads(path.read_text())['choices']) == 5


@pytest.mark.parametrize(
  'content', ['{"format": "resnet_jax/xla_cpu_choices/1", "choi', '{"some": "other file"}', '[1]']
)
def test_a_cache_that_is_not_one_is_set_aside_with_a_warning(tmp_path, content, caplog):
  path = tmp_path / 'choices.json'
  path.write_text(content)
  build, built = fake_build({})
  step = tune(build, path)
  step(*fake_args())
  assert len(built) > 1  # timed again
  assert any('is not a cache of XLA:CPU choices' in r.getMessage() for r in caplog.records)
  assert (tmp_path / 'choices.json.bad').read_text() == content  # kept, not lost
  assert str(step.choice) in json.loads(path.read_text())['choices'].popitem()[1]['images_per_s']


@pytest.mark.parametrize(
  'damage',
  [
    lambda entry: entry['choice'].update(fusions='ynn:everything'),
    lambda entry: entry['choice'].update(conv1x1='winograd'),
    lambda entry: entry.pop('images_per_s'),
    lambda entry: entry.pop('timed_on'),
  ],
)
def test_an_entry_with_an_unknown_choice_is_timed_again(tmp_path, caplog, damage):
  path = tmp_path / 'choices.json'
  tune(fake_build({})[0], path)(*fake_args())
  content = json.loads(path.read_text())
  for entry in content['choices'].values():
    damage(entry)
  path.write_text(json.dumps(content))
  build, built = fake_build({})
  tune(build, path)(*fake_args())
  assert len(built) > 1
  assert any('unknown choice' in r.getMessage() for r in caplog.records)


def _put_many(path, writer, count):
  cache = autotune.ChoiceCache(path)
  for i in range(count):
    cache.put(f'{writer}-{i}', {'choice': {'fusions': 'xla', 'conv1x1': 'conv'}, 'n': i})


def test_processes_writing_at_once_leave_a_readable_file_with_every_entry(tmp_path):
  path = tmp_path / 'choices.json'
  context = multiprocessing.get_context('spawn')
  writers = [context.Process(target=_put_many, args=(path, w, 25)) for w in 'ab']
  for writer in writers:
    writer.start()
  for writer in writers:
    writer.join(timeout=120)
    assert writer.exitcode == 0
  choices = json.loads(path.read_text())['choices']
  assert len(choices) == 50
  assert not list(tmp_path.glob('*.tmp'))


def test_an_unwritable_cache_costs_a_warning_only(tmp_path, caplog):
  (tmp_path / 'file').write_text('')
  build, _ = fake_build({})
  step = tune(build, tmp_path / 'file' / 'choices.json')
  step(*fake_args())
  assert step.choice is not None
  assert any('could not cache' in r.getMessage() for r in caplog.records)


def _tiny_config(cpu_options):
  config = defaults.get_config()
  config.model.update(depth=8, width=4, bn_group_size=0)
  config.train.batch_size = 16
  config.train.cpu_options = cpu_options
  return config


def test_the_tuned_train_step_is_the_run_with_the_chosen_options(tmp_path, monkeypatch):
  """The real steps: the tuned first step gives what the chosen options give from the
  same state (tuning consumed none of it), and the eval step tunes on its own."""
  mesh = parallel.create_mesh()
  config = _tiny_config('autotune')
  start = train_state.initialize(config, mesh, num_classes=10, in_channels=3, steps_per_epoch=4)
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch(
    {
      'image': rng.standard_normal((16, 8, 8, 3), dtype=np.float32),
      'label': rng.integers(0, 10, 16).astype(np.int32),
      'mask': np.ones(16, bool),
    },
    mesh,
  )
  initial = jax.tree.map(np.asarray, start.state)
  monkeypatch.setenv(autotune.CACHE_VARIABLE, str(tmp_path / 'choices.json'))
  step = train_state.train_step(config, start, mesh)
  tuned_state, tuned_metrics = step(start.state, batch)
  assert len(step.images_per_s) == len(compiler.FUSION_CANDIDATES) + 1

  fixed = _tiny_config(step.choice.fusions)
  fixed.model.conv1x1 = step.choice.conv1x1
  fixed_start = train_state.initialize(
    fixed, mesh, num_classes=10, in_channels=3, steps_per_epoch=4
  )
  state = parallel.replicate(jax.tree.map(jnp.asarray, initial), mesh)
  want_state, want_metrics = train_state.train_step(fixed, fixed_start, mesh)(state, batch)
  assert int(tuned_state.step) == 1
  tuned, want = (tuned_state, tuned_metrics), (want_state, want_metrics)
  for got_leaf, want_leaf in zip(jax.tree.leaves(tuned), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-6, atol=1e-7)

  evaluate = train_state.eval_step(config, start, mesh)
  sums = evaluate(tuned_state.params, tuned_state.batch_stats, batch)
  assert int(sums['num_examples']) == 16
  cached = json.loads((tmp_path / 'choices.json').read_text())
  assert sorted(key.split(' | ')[-1].split()[0] for key in cached['choices']) == ['eval', 'train']


_TWO_PROCESSES = """
import sys, jax
jax.distributed.initialize(f'localhost:{sys.argv[1]}', num_processes=2, process_id=int(sys.argv[2]))
from tests import test_autotune as t
# Each process finds another candidate fastest; both must run process 0's.
fastest = 'ynn-off, 1x1 as einsum' if jax.process_index() == 0 else 'ynn:dot, 1x1 as einsum'
build, built = t.fake_build({fastest: 0.005})
step = t.tune(build, sys.argv[3] + f'/choices{jax.process_index()}.json')
step(*t.fake_args())
print('CHOICE', step.choice)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_processes_of_a_run_take_process_0s_choice(tmp_path):
  port = _free_port()
  processes = [
    subprocess.Popen(
      [sys.executable, '-c', _TWO_PROCESSES, str(port), str(i), str(tmp_path)],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      cwd=ROOT,
      env=environment(),
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=120)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs
  for output in outputs:
    assert 'CHOICE ynn-off, 1x1 as einsum' in output, output
  assert (tmp_path / 'choices0.json').exists() and not (tmp_path / 'choices1.json').exists()


@pytest.mark.slow
def test_two_hosts_time_the_real_steps_together(tmp_path):
  """train.py as two processes of four devices: the timed steps hold collectives, so the
  processes must run the same candidates the same number of times, or they would hang."""
  env = environment(4, **{autotune.CACHE_VARIABLE: str(tmp_path / 'choices.json')})
  args = [
    *tiny(train__cpu_options='autotune'),
    f'--workdir={tmp_path / "run"}',
    f'--coordinator_address=localhost:{_free_port()}',
    '--num_processes=2',
  ]
  processes = [start('train.py', *args, f'--process_id={i}', env=env) for i in (0, 1)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  for step in ('train', 'eval'):
    assert f'{step} step on XLA:CPU: timed 6 ways' in outputs[0]
  assert 'XLA:CPU' not in outputs[1]  # process 0 reports, and writes the cache
  cache = json.loads((tmp_path / 'choices.json').read_text())
  assert len(cache['choices']) == 2
