"""What the commands share: the `--config` flag, and errors as one line.

A misspelled override (`--config.model.dept=34`) makes ml_collections raise a
raw KeyError/AttributeError from inside flag parsing; a config file that does
not load only fails when first read, with a multi-line trace. Commands run
`cli.run(main)` instead of `app.run(main)`, so that these, a value of the wrong
type and a `ConfigError` (resnet_jax/errors.py) all end as one line on stderr
and exit status 2:

  error: --config.model.dept=34: the config has no field 'dept' (did you mean "depth"?)

A `RunError` ends the same way with exit status 1. `--verbose` shows the
traceback too. Only the commands import this module, and they define their flags
when run, so importing any other module of the package defines none.
"""

import re
import sys
import traceback
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from resnet_jax.errors import EXIT_CONFIG_ERROR, EXIT_RUN_ERROR, ConfigError, RunError

_CONFIG_FLAGS = []  # The names given to define_config_flag, checked after parsing.


def define_config_flag(default: str | None = None, name: str = 'config'):
  """`--config=FILE[:ARG]` plus `--config.a.b=VALUE` overrides of existing fields only."""
  _CONFIG_FLAGS.append(name)
  return config_flags.DEFINE_config_file(
    name,
    default,
    'Config file (get_config() in a .py file), optionally FILE:ARG.',
    lock_config=True,
  )


def _one_line(message: str) -> str:
  """The first and last non-empty lines of a multi-line message, joined."""
  lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
  if len(lines) <= 1:
    return lines[0] if lines else ''
  return f'{lines[0]} {lines[-1]}'


def _missing_key_message(error: Exception, argv: list[str]) -> str:
  """Names the override whose path has a missing field, with ml_collections' hint."""
  if error.args and isinstance(error.args[0], KeyError):
    error = error.args[0]  # ml_collections wraps the KeyError in an AttributeError.
  text = str(error.args[0]) if error.args else ''
  key = re.match(r"'?([^'\n]*)", text).group(1)
  hint = re.search(r'Did you mean "([^"]+)"', text)
  arg = next(
    (a for a in argv if a.startswith('--') and key in a.split('=', 1)[0].split('.')[1:]), None
  )
  where = f'{arg}: ' if arg else 'in the config file: '
  suggestion = f' (did you mean "{hint.group(1)}"?)' if hint else ''
  return f"{where}the config has no field '{key}'{suggestion}"


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run`'s flags_parser: absl parsing, with config problems as one line."""
  verbose = '--verbose' in argv  # Not parsed yet when parsing fails.
  try:
    remaining = flags.FLAGS(argv)
  except (KeyError, AttributeError) as e:
    _exit(_missing_key_message(e, argv), e if verbose else None)
  except flags.Error as e:
    _exit(_one_line(str(e)), e if verbose else None)
  except OSError as e:  # A config file that could not be read, met by an override.
    _exit(_unreadable_config(' / '.join(_CONFIG_FLAGS), e), e if verbose else None)
  except Exception as e:  # noqa: BLE001 (the config file's own code failed while loading)
    message = f'the config file does not load: {type(e).__name__}: {_one_line(str(e))}'
    _exit(message, e if verbose else None)
  for name in _CONFIG_FLAGS:
    value = flags.FLAGS[name].value
    if value is None:
      continue
    try:
      value.keys()  # A config file that failed to load raises only when read.
    except OSError as e:
      _exit(_unreadable_config(name, e), e if verbose else None)
  return remaining


def _unreadable_config(name: str, error: OSError) -> str:
  last_line = str(error).strip().splitlines()[-1].strip()
  reason = re.sub(r'^.*\[Errno \d+\] ', '', last_line)  # No such file or directory: 'x.py'
  return f'--{name}: the config file does not load: {reason}'


def _exit(message: str, error: Exception | None = None, status: int = EXIT_CONFIG_ERROR):
  """Prints `error: message` and exits with `status`; with `error`, its traceback first."""
  if error is not None:
    traceback.print_exception(error)
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def run(main: Callable[[list[str]], int | None]):
  """`app.run(main)` with one-line errors for config and run problems (see module doc),
  `--verbose`, and absl logging at WARNING unless --verbosity is given. What main returns
  is the exit status."""

  if 'verbose' not in flags.FLAGS:
    flags.DEFINE_bool('verbose', False, 'Show the traceback of an error, not one line.')

  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:
      # orbax logs each save step by step at INFO; keep the console to our own lines.
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except (ConfigError, RunError) as e:
      status = EXIT_CONFIG_ERROR if isinstance(e, ConfigError) else EXIT_RUN_ERROR
      _exit(str(e), e if flags.FLAGS.verbose else None, status)

  app.run(guarded, flags_parser=parse_flags)
