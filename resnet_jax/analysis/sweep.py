"""Runs a grid of config overrides, one training run per point, then a table and curves.

  python -m resnet_jax.analysis.sweep --config=configs/resnet_cifar10.py \
    --grid model.depth=20,56 --grid model.shortcut=A,none --workdir=runs/sweep

Each point is an ordinary train.py workdir under --workdir, named after its overrides
(`depth-20_shortcut-A`), so it can be inspected, evaluated or resumed on its own. Points
run one after another, each in its own process (memory goes back between runs; a crash
ends only that point, and the sweep goes on). Rerunning the same command resumes the
grid: finished points (a `sweep.json` in their workdir) are skipped, a half-done one
continues from its last checkpoint. Then `--out`.md (the command, machine, date and
table) and `--out`.png (the error curves) are written.

Several hosts: `--print_commands` prints one train.py command per pending point, to hand
to a scheduler; or each of n hosts sharing the workdir runs `--shard=i/n`. Afterwards
`--report_only` writes the table and curves from what has finished.
Beside them, `--out`_logs/ gets each point's config, metrics and record (no checkpoints:
a few hundred KB): commit it with the table, and `--report_only --workdir=`(that folder)
rewrites both without the runs, on any machine.
The wall time of a run adds up its attempts, a running one's recorded every minute
(`run_record`), so a sweep that is killed loses at most that. A SIGTERM or Ctrl-C stops
the running point with a checkpoint (train.py exits 75) and the sweep with it, exit 75;
between two points, it stops the sweep before the next.
"""

import datetime
import pathlib
import shlex
import shutil
import sys

from absl import flags

from resnet_jax import cli
from resnet_jax.analysis import grid, run_record
from resnet_jax.errors import EXIT_STOPPED, ConfigError, RunError

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('config', None, 'Config file, FILE[:ARG], as for train.py.')
  flags.DEFINE_multi_string('grid', [], 'KEY=V1,V2,...: one axis of the grid (repeat).')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE: an override shared by every point.')
  flags.DEFINE_string('workdir', None, 'Directory of the sweep (one workdir per point).')
  flags.DEFINE_string('out', None, 'Path prefix of the table (.md) and curves (.png).')
  flags.DEFINE_string('panel_by', None, 'A grid key: one curve panel per value.')
  flags.DEFINE_string('shard', '0/1', 'I/N: run every N-th point from the I-th.')
  flags.DEFINE_bool('print_commands', False, 'Print the pending points, run nothing.')
  flags.DEFINE_bool('report_only', False, 'Write the table and curves only.')


def train_command(config: str, point: grid.Point, shared: list[str], workdir) -> list[str]:
  """The training command of one point (resnet_jax/commands/train.py, what train.py runs)."""
  overrides = [f'--config.{kv}' for kv in shared] + point.flags()
  return [
    sys.executable,
    '-m',
    'resnet_jax.commands.train',
    f'--config={config}',
    *overrides,
    f'--workdir={workdir}',
  ]


def copy_logs(root: pathlib.Path, all_points: list[grid.Point], logs: pathlib.Path):
  """Each started point's files that its report is made from, into `logs`/<point name>/."""
  # Here, not above: JAX loads only when a report is made.
  from resnet_jax.analysis import report

  if logs.resolve() == root.resolve():  # A report rewritten from the logs themselves.
    return
  for point in all_points:
    for name in report.RUN_FILES:
      source = root / point.name / name
      if source.exists():
        (logs / point.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, logs / point.name / name)


def write_report(root: pathlib.Path, all_points: list[grid.Point], out: str, panel_by: str | None):
  """`out`.md (command, machine, date, tables), `out`.png (curves), `out`_logs/ (their data)."""
  # Here, not above: JAX and matplotlib load only when a report is made.
  from resnet_jax import metrics
  from resnet_jax.analysis import report

  try:
    from resnet_jax.analysis import plots
  except ImportError:  # No matplotlib: an install of JAX alone still gets its tables.
    plots = None

  results = [
    r for p in all_points for r in report.load_runs(root / p.name, p.name, dict(p.overrides))
  ]
  out_path = pathlib.Path(out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  logs = out_path.with_name(f'{out_path.name}_logs')
  copy_logs(root, all_points, logs)
  png = out_path.with_suffix('.png')
  if plots:
    plots.plot_curves(results, png, panel_by=panel_by, title=f'sweep {root.name}')
  else:
    print(
      'matplotlib is not installed: no plot (pip install matplotlib, then the same command '
      'with --report_only draws it)',
      flush=True,
    )
  total = sum(r.wall_seconds or 0.0 for r in results)
  spread = report.spread_table(results)
  spans = len(report.window_spans(results))
  fewer = (
    f' (the runs logged {spans} windows: train.log_every sets how many)'
    if spans < report.WINDOWS
    else ''
  )
  text = '\n'.join(
    [
      f'# Sweep {root.name}',
      '',
      'Command:',
      '',
      '```',
      shlex.join(['python', '-m', 'resnet_jax.analysis.sweep', *sys.argv[1:]]),
      '```',
      '',
      f'Machine: {report.machine()}.',
      f'Written: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; '
      f'wall time of the runs: {metrics.format_duration(total)} in all.',
      '',
      report.markdown_table(results),
      '',
      *(
        [
          f'Mean ± standard deviation over the points that differ only in {report.SEED_KEY} '
          '(the sample standard deviation, n - 1; finished runs only):',
          '',
          spread,
          '',
        ]
        if spread
        else []
      ),
      report.ERRORS_NOTE,
      '',
      f'Training error % in {spans} equal spans of the steps{fewer} (averaged as above):',
      '',
      report.window_table(results),
      '',
      *([f'![error curves]({png.name})', ''] if plots else []),
      f"Each run's config, metrics and record: {logs.name}/. The command above with "
      f'`--workdir={logs} --report_only` rewrites this file and the plot from them.',
      '',
    ]
  )
  out_path.with_suffix('.md').write_text(text)
  print(f'wrote {out_path.with_suffix(".md")}' + (f' and {png}' if plots else ''), flush=True)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.config or not FLAGS.workdir:
    raise ConfigError('--config=FILE[:ARG] and --workdir=DIR are required')
  all_points = grid.points([grid.parse_axis(spec) for spec in FLAGS.grid])
  mine = grid.shard(all_points, FLAGS.shard)
  if FLAGS.panel_by and FLAGS.panel_by not in dict(all_points[0].overrides):
    raise ConfigError(f'--panel_by={FLAGS.panel_by}: not one of the --grid keys')
  root = pathlib.Path(FLAGS.workdir)
  failed = []
  with run_record.Notices() as notices:
    for i, point in enumerate([] if FLAGS.report_only else mine):
      workdir = root / point.name
      command = train_command(FLAGS.config, point, FLAGS.set, workdir)
      if run_record.is_done(workdir):
        print(f'[{i + 1}/{len(mine)}] {point.name}: done, skipped', flush=True)
        continue
      if FLAGS.print_commands:
        print(shlex.join(command), flush=True)
        continue
      if notices.received:  # A notice between two points: start no more.
        print(f'stopped before {point.name}; the same command resumes the sweep', flush=True)
        return EXIT_STOPPED
      print(f'[{i + 1}/{len(mine)}] {point.name}: running, log in {workdir}/train.log', flush=True)
      returncode = run_record.run(command, workdir, notices)
      if returncode == EXIT_STOPPED:  # A notice (preemption): leave now, no report.
        print(
          f'[{i + 1}/{len(mine)}] {point.name}: stopped with its checkpoint; '
          'the same command resumes the sweep',
          flush=True,
        )
        return EXIT_STOPPED
      if returncode:
        failed.append(point.name)
        print(f'[{i + 1}/{len(mine)}] {point.name}: failed, see its train.log', flush=True)
  if not FLAGS.print_commands:
    write_report(root, all_points, FLAGS.out or str(root / 'results'), FLAGS.panel_by)
  if failed:
    raise RunError(f'{len(failed)} point(s) failed: {", ".join(failed)}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
