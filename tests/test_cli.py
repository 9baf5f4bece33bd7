"""Config problems end as one clear line on stderr (exit status 2), not a traceback; a
RunError too (exit status 1); --verbose adds the traceback."""

import subprocess
import sys
import textwrap

import pytest

from resnet_jax import cli, defaults

_SCRIPT = textwrap.dedent("""
    from resnet_jax import cli, defaults
    from resnet_jax.errors import ConfigError, RunError
    _CONFIG = cli.define_config_flag()
    def main(argv):
      if _CONFIG.value.model.depth == 7:
        raise ConfigError('model.depth=7: not a CIFAR depth')
      if _CONFIG.value.model.depth == 9:
        raise RunError('the run cannot go on: do this')
      print('depth', _CONFIG.value.model.depth)
    cli.run(main)
""")


def _run(tmp_path, *args):
  script = tmp_path / 'entry.py'
  script.write_text(_SCRIPT)
  return subprocess.run(
    [sys.executable, str(script), *args],
    capture_output=True,
    text=True,
    cwd=tmp_path.parent,
    env={'PYTHONPATH': str(_root())},
    timeout=60,
  )


def _root():
  import pathlib

  return pathlib.Path(cli.__file__).parents[1]


@pytest.mark.parametrize(
  'args,message',
  [
    (
      ['--config.model.dept=34'],
      'error: --config.model.dept=34: the config has no field \'dept\' (did you mean "depth"?)',
    ),
    (
      ['--config.modl.depth=34'],
      'error: --config.modl.depth=34: the config has no field \'modl\' (did you mean "model"?)',
    ),
    (
      ['--config.model.depth=abc'],
      "error: flag --config.model.depth=abc: invalid literal for int() with base 10: 'abc'",
    ),
    (['--config.model.depth=7'], 'error: model.depth=7: not a CIFAR depth'),
  ],
)
def test_config_mistakes_are_one_line(tmp_path, args, message):
  result = _run(tmp_path, f'--config={_root() / "configs/default.py"}', *args)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip() == message
  assert result.stdout == ''


def test_run_error_is_one_line_with_status_1_and_verbose_shows_the_traceback(tmp_path):
  config = f'--config={_root() / "configs/default.py"}'
  result = _run(tmp_path, config, '--config.model.depth=9')
  assert result.returncode == 1
  assert result.stderr.strip() == 'error: the run cannot go on: do this'
  result = _run(tmp_path, config, '--config.model.depth=9', '--verbose')
  assert result.returncode == 1 and 'Traceback (most recent call last)' in result.stderr
  assert result.stderr.strip().splitlines()[-1] == 'error: the run cannot go on: do this'
  result = _run(tmp_path, config, '--config.model.dept=9', '--verbose')
  assert result.returncode == 2 and 'Traceback (most recent call last)' in result.stderr


def test_config_file_that_does_not_load(tmp_path):
  result = _run(tmp_path, '--config=configs/nope.py')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    "error: --config: the config file does not load: No such file or directory: 'configs/nope.py'"
  ]
  result = _run(tmp_path, '--config=configs/nope.py', '--config.model.depth=20')  # an override
  assert result.stderr.strip().splitlines() == [
    "error: --config: the config file does not load: No such file or directory: 'configs/nope.py'"
  ]
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(:\n')
  result = _run(tmp_path, f'--config={broken}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    'error: the config file does not load: SyntaxError: invalid syntax (broken.py, line 1)'
  ]
  broken.write_text('def get_config():\n  return 1 / 0\n')
  result = _run(tmp_path, f'--config={broken}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    'error: the config file does not load: ZeroDivisionError: division by zero'
  ]


def test_good_override_runs(tmp_path):
  result = _run(tmp_path, f'--config={_root() / "configs/default.py"}', '--config.model.depth=56')
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'depth 56'


def test_config_json_round_trip():
  config = defaults.get_config()
  again = defaults.from_json(defaults.to_json(config))
  assert again.model.to_dict() == config.model.to_dict()
  assert list(again.optim.boundaries) == list(config.optim.boundaries)
