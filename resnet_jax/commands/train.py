"""Trains (or resumes) a residual network: flags, then one call.

  python train.py --config=configs/resnet20_fashion_mnist.py --workdir=runs/default
  python train.py --config=configs/default.py --config.model.depth=56 --workdir=runs/r56

Restarting the same command on the same workdir continues the run; one stopped on
notice (SIGTERM, Ctrl-C) saves a checkpoint first and exits 75 (`errors.EXIT_STOPPED`).
Several processes (multi-host): pass --coordinator_address/--num_processes/--process_id,
or let JAX read the cluster's environment (Slurm, Open MPI, Cloud TPU).
"""

from absl import flags

from resnet_jax import cli, parallel
from resnet_jax.errors import EXIT_STOPPED, ConfigError

FLAGS = flags.FLAGS


def define_flags():
  cli.define_config_flag()
  flags.DEFINE_string(
    'workdir', None, 'Directory of the run (checkpoints, metrics).', required=True
  )
  flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for a multi-process job.'
  )
  flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
  flags.DEFINE_integer('process_id', None, 'This process (0-based).')


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config is None:
    raise ConfigError('--config=FILE is required')
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  from resnet_jax import trainer  # Here, not above: a mistyped flag fails before TF loads.

  if trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir) is None:
    return EXIT_STOPPED
  return 0


def run():
  define_flags()
  cli.run(main)


if __name__ == '__main__':
  run()
