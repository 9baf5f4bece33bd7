"""The sweep runner: grid points and names, a tiny grid run half then resumed, the table."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from resnet_jax import defaults
from resnet_jax.analysis import grid, plots, report, run_record
from resnet_jax.errors import EXIT_STOPPED, ConfigError
from tests.entry_points import TINY, run, start

SWEEP = '-m resnet_jax.analysis.sweep'


def test_points_are_the_product_first_axis_outermost():
  axes = [grid.parse_axis('model.depth=20,56'), grid.parse_axis('model.shortcut=A,none')]
  points = grid.points(axes)
  assert [p.name for p in points] == [
    'depth-20_shortcut-A',
    'depth-20_shortcut-none',
    'depth-56_shortcut-A',
    'depth-56_shortcut-none',
  ]
  assert points[1].flags() == ['--config.model.depth=20', '--config.model.shortcut=none']


def test_names_keep_the_full_key_where_last_parts_clash():
  axes = [grid.parse_axis('model.width=4'), grid.parse_axis('data.width=8')]
  assert grid.points(axes)[0].name == 'model.width-4_data.width-8'


def test_keys_joined_by_a_slash_move_together():
  axes = [grid.parse_axis('data.mixup_alpha/optim.label_smoothing=0/0,0.2/0.1')]
  points = grid.points([*axes, grid.parse_axis('seed=0,1')])
  assert [p.name for p in points] == [
    'mixup_alpha-0_label_smoothing-0_seed-0',
    'mixup_alpha-0_label_smoothing-0_seed-1',
    'mixup_alpha-0.2_label_smoothing-0.1_seed-0',
    'mixup_alpha-0.2_label_smoothing-0.1_seed-1',
  ]
  assert points[2].flags() == [
    '--config.data.mixup_alpha=0.2',
    '--config.optim.label_smoothing=0.1',
    '--config.seed=0',
  ]


@pytest.mark.parametrize(
  'spec', ['model.depth', '=1,2', 'model.depth=1,,2', 'model.depth=1,1', 'a.x/b.y=1/2,3']
)
def test_bad_axes_are_refused(spec):
  with pytest.raises(ValueError, match='grid axis'):
    grid.parse_axis(spec)


def test_shards_split_the_points():
  points = grid.points([grid.parse_axis('model.depth=8,14,20')])
  assert [p.name for p in grid.shard(points, '1/2')] == ['depth-14']
  with pytest.raises(ValueError, match='I/N'):
    grid.shard(points, '2/2')


def test_apply_types_each_value_like_its_field():
  overrides = (
    ('model.depth', '56'),
    ('model.scan', 'True'),
    ('model.shortcut', 'none'),
    ('optim.boundaries', '(10, 20)'),
    ('optim.learning_rate', '1'),
  )
  config = grid.apply(defaults.get_config(), grid.Point('p', overrides))
  assert (config.model.depth, config.model.scan, config.model.shortcut) == (56, True, 'none')
  assert tuple(config.optim.boundaries) == (10, 20) and config.optim.learning_rate == 1.0
  bad = {
    ('model.dept', '5'): 'model.dept: the config has no such field',
    ('model.depth', 'fifty'): "model.depth: expected a int, got 'fifty'",
    ('model.scan', 'yes'): "model.scan: expected true or false, got 'yes'",
  }
  for override, message in bad.items():
    with pytest.raises(ConfigError, match=message):
      grid.apply(defaults.get_config(), grid.Point('p', (override,)))


def test_error_curve_keeps_the_last_record_of_a_step(tmp_path):
  records = [
    {'step': 2, 'split': 'train', 'top1': 0.5},
    {'step': 4, 'split': 'train', 'top1': 0.6},
    {'step': 4, 'split': 'eval', 'top1': 0.7},
    {'step': 4, 'split': 'train', 'top1': 0.75},  # the same step again, after a resume
  ]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  assert report.error_curve(tmp_path, 'train') == [(2, 50.0), (4, 25.0)]
  assert report.error_curve(tmp_path, 'eval') == [(4, pytest.approx(30.0))]


def test_training_error_averages_the_final_tenth_of_the_steps_by_window_length():
  curve = [(25 * i, 50.0) for i in range(1, 37)] + [(925, 10.0), (950, 20.0), (1000, 30.0)]
  result = report.RunResult('run', {}, True, train_curve=curve, test_curve=[])
  # The last 100 steps: (900, 925] at 10%, (925, 950] at 20%, (950, 1000] at 30%.
  assert result.train_error == pytest.approx((25 * 10 + 25 * 20 + 50 * 30) / 100)
  # A window that straddles the start counts for its part after it.
  straddling = report.RunResult(
    'run', {}, True, train_curve=[(880, 0.0), (1000, 60.0)], test_curve=[]
  )
  assert straddling.train_error == pytest.approx(60.0)
  assert report.RunResult('run', {}, True, train_curve=[], test_curve=[]).train_error is None
  assert result.mean_train_error(500, 500) is None  # an empty span has no error


def test_the_window_table_gives_each_run_its_error_per_span_of_the_longest_run():
  shared = {'train.num_epochs': '30'}
  deep = report.RunResult('a', {'model.depth': '56', **shared}, True, [(50, 40.0), (100, 20.0)], [])
  # Logged at 30 and 60: (30, 60] at 10% straddles the span boundary at 50.
  half = report.RunResult('b', {'model.depth': '20', **shared}, False, [(30, 30.0), (60, 10.0)], [])
  table = report.window_table([deep, half], windows=2).splitlines()
  assert table[0] == '| model.depth | 0-50 | 50-100 |'
  assert table[2] == '| 56 | 40.00 | 20.00 |'
  assert table[3] == f'| 20 | {(30 * 30 + 20 * 10) / 50:.2f} | - |'  # (50, 100] not reached
  assert deep.mean_train_error(25, 75) == pytest.approx(30.0)
  short = report.RunResult('c', {}, True, [(2, 50.0), (3, 10.0)], [])
  assert report.window_table([short], windows=10).splitlines()[2] == '| 50.00 | 10.00 |'


def test_runs_that_logged_few_windows_get_as_many_spans_not_repeats():
  once = report.RunResult('a', {}, True, [(60, 40.0)], [])  # 60 steps, log_every=100
  assert report.window_spans([once]) == [(0, 60)]
  twice = report.RunResult('b', {}, True, [(30, 50.0), (60, 30.0)], [])
  assert report.window_spans([once, twice]) == [(0, 30), (30, 60)]
  often = report.RunResult('c', {}, True, [(s, 10.0) for s in range(5, 105, 5)], [])
  assert len(report.window_spans([often])) == report.WINDOWS


def _seeded(seed, model, train, test, done=True, ema=()):
  overrides = {'model.depth': model, 'seed': seed}
  return report.RunResult(f'{model}-{seed}', overrides, done, [(10, train)], [(10, test)], ema)


def test_the_spread_table_pools_the_seeds_of_each_point():
  runs = [
    _seeded('0', '20', 10.0, 25.0, ema=[(10, 20.0)]),
    _seeded('1', '20', 12.0, 30.0, ema=[(10, 22.0)]),
    _seeded('0', '56', 8.0, 20.0),
    _seeded('1', '56', 9.0, 21.0, done=False),  # unfinished: left out of the mean
  ]
  header, _, first, second = report.spread_table(runs).splitlines()
  assert header == '| model.depth | runs | train error % | test error % | EMA test error % |'
  assert first == '| 20 | 2 of 2 done | 11.00 ± 1.41 (2) | 27.50 ± 3.54 (2) | 21.00 ± 1.41 (2) |'
  assert second == '| 56 | 1 of 2 done | 8.00 (1) | 20.00 (1) | - |'
  assert report.spread_table(runs[::2]) is None  # one run per point: nothing to pool


def test_the_plot_draws_seeds_as_their_mean_and_a_band(tmp_path, monkeypatch):
  figures = []
  monkeypatch.setattr(plots.plt, 'close', figures.append)
  runs = [
    report.RunResult('a', {'seed': '0'}, True, [(10, 40.0), (20, 30.0)], [(20, 32.0)]),
    report.RunResult('b', {'seed': '1'}, True, [(10, 44.0), (20, 20.0)], [(20, 36.0)]),
  ]
  not_started = report.RunResult('c', {'seed': '2'}, False, [], [])
  plots.plot_curves([*runs, not_started], tmp_path / 'curves.png')
  (figure,) = figures
  (ax,) = figure.axes
  train, test = ax.lines
  assert list(train.get_ydata()) == [42.0, 25.0] and list(test.get_ydata()) == [34.0]
  assert train.get_label() == '2 seeds (train)'  # the seed not started yet is not counted
  band = ax.collections[0].get_paths()[0].vertices[:, 1]
  assert {20.0, 30.0, 40.0, 44.0} <= set(band)  # min and max of each step
  plots.plt.close(figure)
  runs[0].ema_test_curve = [(20, 30.0)]
  plots.plot_curves(runs, tmp_path / 'curves.png')
  assert figures[-1].axes[0].lines[-1].get_label() == '2 seeds (EMA test)'
  plots.plt.close(figures[-1])


def _sweep_args(tmp_path, *extra) -> list[str]:
  """The sweep over TINY's run: its --config, and its overrides as --set."""
  config_flag, *overrides = TINY
  return [
    config_flag,
    *(f'--set={arg.removeprefix("--config.")}' for arg in overrides),
    '--grid=model.shortcut=A,none',
    f'--workdir={tmp_path / "sweep"}',
    *extra,
  ]


def _sweep(tmp_path, *extra):
  return run(SWEEP, *_sweep_args(tmp_path, *extra))


def test_shared_settings_are_the_grid_values_every_run_has():
  """What the plot says once in its title and leaves out of the legend."""
  runs = [
    report.RunResult('a', {'model.depth': '20', 'train.num_epochs': '18'}, True, [], []),
    report.RunResult('b', {'model.depth': '56', 'train.num_epochs': '18'}, True, [], []),
  ]
  assert report.shared_settings(runs) == {'train.num_epochs': '18'}
  assert report.shared_settings(runs[:1]) == runs[0].overrides
  assert report.shared_settings([]) == {}


def test_the_table_has_an_ema_column_where_a_run_kept_one(tmp_path):
  records = [
    {'step': 2, 'split': 'train', 'loss': 1.5},  # a mixed batch: no top-1
    {'step': 2, 'split': 'eval', 'top1': 0.75, 'ema_top1': 0.8},
  ]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  assert report.error_curve(tmp_path, 'train') == []
  assert report.error_curve(tmp_path, 'eval', 'ema_top1') == [(2, pytest.approx(20.0))]
  runs = [
    report.RunResult('a', {'seed': '0'}, True, [], [(2, 25.0)], ema_test_curve=[(2, 20.0)]),
    report.RunResult('b', {'seed': '1'}, True, [], [(2, 30.0)]),
  ]
  header, _, with_ema, without = report.markdown_table(runs).splitlines()
  assert '| test error % | EMA test error % |' in header
  assert '| 25.00 | 20.00 |' in with_ema and '| 30.00 | - |' in without
  assert 'EMA' not in report.markdown_table(runs[1:])


def test_a_long_title_is_wrapped_inside_the_figure(tmp_path, monkeypatch):
  """One run shares all its settings: they all go into the title."""
  figures = []
  monkeypatch.setattr(plots.plt, 'close', figures.append)
  overrides = {
    'model.shortcut': 'none',
    'model.depth': '56',
    'train.num_epochs': '30',
    'train.eval_every': '2344',
  }
  run = report.RunResult('a', overrides, True, [(0, 90.0), (10, 50.0)], [(10, 55.0)])
  plots.plot_curves([run], tmp_path / 'curves.png', title='sweep degradation_30ep')
  (figure,) = figures
  title = figure.axes[0].title
  box = title.get_window_extent(figure.canvas.get_renderer())
  assert 'eval_every=2344' in title.get_text()
  assert box.x0 >= 0 and box.x1 <= figure.bbox.x1
  plots.plt.close(figure)


def test_a_half_done_grid_resumes_and_reports(tmp_path):
  first = _sweep(tmp_path, '--shard=0/2')
  assert first.returncode == 0, first.stderr
  assert 'shortcut-A: running' in first.stdout and 'shortcut-none' not in first.stdout

  pending = _sweep(tmp_path, '--print_commands')
  assert 'shortcut-A: done, skipped' in pending.stdout
  assert '--config.model.shortcut=none' in pending.stdout

  second = _sweep(tmp_path)
  assert second.returncode == 0, second.stderr
  assert 'shortcut-A: done, skipped' in second.stdout
  assert 'shortcut-none: running' in second.stdout
  text = (tmp_path / 'sweep' / 'results.md').read_text()
  table, by_span = text.split('equal spans of the steps')
  rows = [line for line in table.splitlines() if line.startswith('| A') or line.startswith('| n')]
  assert len(rows) == 2 and all('(not finished)' not in row for row in rows)
  assert '| 4 |' in rows[0]  # steps
  # 4 steps logged every 2: two spans, not ten that repeat two windows, and it says why.
  assert by_span.startswith(' (the runs logged 2 windows: train.log_every sets how many)')
  assert '| model.shortcut | 0-2 | 2-4 |' in by_span
  assert (tmp_path / 'sweep' / 'results.png').stat().st_size > 1000
  record = run_record.read(tmp_path / 'sweep' / 'shortcut-none')
  assert record['status'] == 'done' and record['attempts'] == 1

  # The logs beside the report rebuild it without the runs (their checkpoints gone).
  logs = tmp_path / 'sweep' / 'results_logs'
  assert sorted(p.name for p in (logs / 'shortcut-A').iterdir()) == [
    'config.json',
    'metrics.jsonl',
    'sweep.json',
  ]
  moved = tmp_path / 'elsewhere'
  logs.rename(moved)
  (tmp_path / 'sweep').rename(tmp_path / 'gone')
  args = [arg for arg in _sweep_args(tmp_path) if not arg.startswith('--workdir=')]
  again = run(SWEEP, *args, f'--workdir={moved}', '--report_only', f'--out={tmp_path / "again"}')
  assert again.returncode == 0, again.stderr
  rebuilt = (tmp_path / 'again.md').read_text()
  tables = [[line for line in t.splitlines() if line.startswith('|')] for t in (text, rebuilt)]
  assert tables[0] == tables[1] and len(tables[0]) == 8  # both tables, their rows unchanged


def test_a_failing_point_is_reported_and_the_sweep_fails(tmp_path):
  result = _sweep(tmp_path, '--set=model.depth=9', '--shard=1/2')
  assert result.returncode == 1
  assert 'shortcut-none: failed' in result.stdout
  assert '1 point(s) failed: shortcut-none' in result.stderr
  log = (tmp_path / 'sweep' / 'shortcut-none' / 'train.log').read_text()
  assert '6n+2' in log


def test_a_running_point_keeps_its_wall_time_on_record(tmp_path):
  """A sweep killed mid-run leaves a readable record with the attempt's time so far."""
  workdir = tmp_path / 'point'
  workdir.mkdir()
  record_path = workdir / run_record.FILENAME
  record_path.write_text(json.dumps({'status': 'running', 'attempts': 1, 'wall_seconds': 100.0}))
  peek = f'import time; time.sleep(1); print(open({str(record_path)!r}).read())'

  with run_record.Notices() as notices:
    assert run_record.run([sys.executable, '-c', peek], workdir, notices, record_every=0.1) == 0

  while_running = json.loads((workdir / 'train.log').read_text())
  assert while_running['status'] == 'running' and while_running['attempts'] == 2
  assert while_running['wall_seconds'] > 100.2  # rewritten during the attempt, not at start only
  finished = run_record.read(workdir)
  assert finished['status'] == 'done' and finished['attempts'] == 2
  assert finished['wall_seconds'] >= 101.0  # the killed attempt's 100 s, then this one's
  assert not (workdir / f'{run_record.FILENAME}.partial').exists()


def _wait_for(path, text: str, process: subprocess.Popen, timeout: float = 240.0):
  """Until `path` holds `text`; fails (the process killed) when it ends or time is up."""
  deadline = time.monotonic() + timeout
  while not (path.exists() and text in path.read_text()):
    if process.poll() is not None or time.monotonic() > deadline:
      process.kill()
      raise AssertionError(f'no {text!r} in {path}:\n{process.communicate()[0][-3000:]}')
    time.sleep(0.2)


def test_a_sigterm_stops_the_running_point_with_a_checkpoint_and_the_sweep_with_75(tmp_path):
  sweep = start(SWEEP, *_sweep_args(tmp_path, '--set=train.num_steps=100000'))
  point = tmp_path / 'sweep' / 'shortcut-A'
  _wait_for(point / 'train.log', 'step 2/100000', sweep)
  sweep.send_signal(signal.SIGTERM)  # To the sweep alone, as a container's first process.
  output = sweep.communicate(timeout=240)[0]

  assert sweep.returncode == EXIT_STOPPED, output[-3000:]
  assert 'shortcut-A: stopped with its checkpoint' in output
  assert 'shortcut-none' not in output and not (tmp_path / 'sweep' / 'shortcut-none').exists()
  assert 'SIGTERM: stopped after step' in (point / 'train.log').read_text()
  assert run_record.read(point)['status'] == 'stopped'
  assert list((point / 'checkpoints').iterdir())
  pending = _sweep(tmp_path, '--set=train.num_steps=100000', '--print_commands')
  assert '--config.model.shortcut=A' in pending.stdout  # Not skipped: it resumes.


@pytest.mark.parametrize('notice', [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize(
  'on_sigterm',
  [f'signal.signal(signal.SIGTERM, lambda *_: sys.exit({EXIT_STOPPED}))', 'pass'],
  ids=['exits_75', 'killed_while_starting'],
)
def test_a_notice_to_the_sweep_reaches_the_point_as_sigterm_and_stops_it(
  tmp_path, notice, on_sigterm
):
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  ready = tmp_path / 'ready'
  child = (
    'import pathlib, signal, sys, time\n'
    f'{on_sigterm}\n'
    f'pathlib.Path({str(ready)!r}).touch()\n'
    'time.sleep(60)\n'
    'sys.exit(1)\n'
  )

  def notify_when_ready():
    while not ready.exists():
      time.sleep(0.05)
    signal.raise_signal(notice)

  threading.Thread(target=notify_when_ready, daemon=True).start()
  with run_record.Notices() as notices:
    returncode = run_record.run([sys.executable, '-c', child], tmp_path, notices, record_every=0.1)
  assert returncode == EXIT_STOPPED
  assert run_record.read(tmp_path)['status'] == 'stopped'
  assert {s: signal.getsignal(s) for s in before} == before


def test_a_notice_while_no_point_runs_stops_the_next_one_at_once(tmp_path):
  """A notice that comes while a point starts (its train.py not yet known) is not lost."""
  with run_record.Notices() as notices:
    signal.raise_signal(signal.SIGTERM)  # This process lives on: the notice is kept.
    assert notices.received == 1
    began = time.monotonic()
    command = [sys.executable, '-c', 'import time; time.sleep(60)']
    returncode = run_record.run(command, tmp_path, notices, record_every=0.1)
  assert returncode == EXIT_STOPPED and time.monotonic() - began < 30
  assert run_record.read(tmp_path)['status'] == 'stopped'


def test_a_notice_between_two_points_stops_the_sweep_before_the_second(tmp_path):
  """The sweep in a process of its own, each point's run replaced by one that ends as the
  notice comes (between that point and the next)."""
  script = (
    'import signal\n'
    'from resnet_jax import cli\n'
    'from resnet_jax.analysis import run_record, sweep\n'
    'def ends_with_a_notice(command, workdir, notices):\n'
    '  print("ran", workdir.name, flush=True)\n'
    '  signal.raise_signal(signal.SIGTERM)\n'
    '  return 0\n'
    'run_record.run = ends_with_a_notice\n'
    'sweep.define_flags()\n'
    'cli.run(sweep.main)\n'
  )
  result = run(f'-c {script}', *_sweep_args(tmp_path))
  assert result.returncode == EXIT_STOPPED, result.stderr
  assert 'ran shortcut-A' in result.stdout and 'ran shortcut-none' not in result.stdout
  assert 'stopped before shortcut-none; the same command resumes the sweep' in result.stdout
  assert not (tmp_path / 'sweep' / 'results.md').exists()


def test_a_run_of_several_seeds_reports_each_seed(tmp_path):
  """train.num_seeds=2: two rows, seed added, each seed's curves; the wall time once."""
  from resnet_jax import checkpoint

  config = defaults.get_config()
  config.data.dataset, config.data.image_size = 'synthetic', 8
  config.model.depth, config.seed, config.train.num_seeds = 8, 5, 2
  checkpoint.save_config(config, tmp_path)
  records = [
    {'step': 2, 'split': 'train', 'top1': 0.7, 'seed5/top1': 0.6, 'seed6/top1': 0.8},
    {'step': 2, 'split': 'eval', 'top1': 0.5, 'seed5/top1': 0.4, 'seed6/top1': 0.6},
  ]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  (tmp_path / run_record.FILENAME).write_text(json.dumps({'status': 'done', 'wall_seconds': 9}))
  first, second = report.load_runs(tmp_path, 'run', {'model.depth': '8'})
  assert (first.name, first.overrides) == ('run/seed5', {'model.depth': '8', 'seed': '5'})
  assert first.train_curve == [(2, pytest.approx(40.0))]
  assert second.test_curve == [(2, pytest.approx(40.0))] and second.overrides['seed'] == '6'
  assert (first.wall_seconds, second.wall_seconds) == (9, None) and first.params == second.params
  assert '| 8 | 2 of 2 done | 30.00 ± 14.14 (2) |' in report.spread_table([first, second])


def test_without_matplotlib_the_report_has_its_tables_and_no_plot(tmp_path, monkeypatch, capsys):
  """An install of JAX alone (no matplotlib) gets the markdown report and says how to draw."""
  from resnet_jax import checkpoint
  from resnet_jax.analysis import sweep

  config = defaults.get_config()
  config.data.dataset, config.data.image_size, config.model.depth = 'synthetic', 8, 8
  point = grid.Point('depth-8', (('model.depth', '8'),))
  checkpoint.save_config(config, tmp_path / point.name)
  records = [{'step': 2, 'split': 'train', 'top1': 0.7}, {'step': 2, 'split': 'eval', 'top1': 0.5}]
  (tmp_path / point.name / 'metrics.jsonl').write_text(
    ''.join(json.dumps(r) + '\n' for r in records)
  )
  (tmp_path / point.name / run_record.FILENAME).write_text(json.dumps({'status': 'done'}))
  monkeypatch.setitem(sys.modules, 'resnet_jax.analysis.plots', None)  # its import fails
  monkeypatch.delattr(sys.modules['resnet_jax.analysis'], 'plots')
  sweep.write_report(tmp_path, [point], str(tmp_path / 'out'), panel_by=None)
  text = (tmp_path / 'out.md').read_text()
  assert '| 8 | 30.00 | 50.00 |' in text and '![error curves]' not in text
  assert not (tmp_path / 'out.png').exists()
  assert 'matplotlib is not installed: no plot' in capsys.readouterr().out
