"""Trains (or resumes) a residual network: flags, then one call.

  python train.py --config=configs/resnet20_fashion_mnist.py --workdir=runs/default
  python train.py --config=configs/default.py --config.model.depth=56 --workdir=runs/r56

Restarting the same command on the same workdir continues the run; one stopped on
notice (SIGTERM, Ctrl-C) saves a checkpoint first and exits 75 (`cli.EXIT_STOPPED`). Several
processes (multi-host): pass --coordinator_address/--num_processes/--process_id,
or let JAX read the cluster's environment (Slurm, Open MPI, Cloud TPU).
"""

from absl import flags

from resnet_jax import cli, parallel

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Directory of the run (checkpoints, metrics).', required=True
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0, for a multi-process job.'
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0-based).')


def main(argv):
  if len(argv) > 1:
    raise cli.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _CONFIG.value is None:
    raise cli.ConfigError('--config=FILE is required')
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from resnet_jax import trainer  # Here, not above: a mistyped flag fails before TF loads.

  if trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value) is None:
    return cli.EXIT_STOPPED
  return 0


if __name__ == '__main__':
  cli.run(main)
