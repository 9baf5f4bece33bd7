"""The two errors a user sees as one line, and the exit statuses of the commands.

Library code raises them where it checks a value or meets a condition it cannot
get past; the commands (`cli.run`) print them as `error: <message>` without a
traceback. Anything else keeps its traceback: it is a bug, not the user's input.
"""

EXIT_RUN_ERROR = 1
EXIT_CONFIG_ERROR = 2
# A run stopped on notice (SIGTERM, Ctrl-C) with its checkpoint saved: sysexits' EX_TEMPFAIL,
# not 0, so that what restarts failed jobs (a Kubernetes Job, a retry loop in a job script)
# restarts it, and a sweep does not take it for finished.
EXIT_STOPPED = 75


class ConfigError(ValueError):
  """A config value or input (dataset, workdir, weight file) that cannot work: says which
  and what to do instead."""


class RunError(RuntimeError):
  """A run that cannot go on (a non-finite loss, a failed checkpoint save): says why and
  what to do."""
