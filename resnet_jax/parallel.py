"""Data parallelism: the device mesh, shardings, multi-process setup, batch placement.

One code path for one CPU, eight GPUs or a TPU pod slice: a 1-D mesh over all
devices with the axis `data`; batches are sharded along it and the training
state is replicated, and `jax.jit` inserts the gradient all-reduce. Each
process feeds only its own slice of the global batch
(`jax.make_array_from_process_local_data`).
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def _cluster_environment() -> bool:
  """True where the environment describes a multi-process job that JAX can join.

  `jax.distributed.initialize()` with no arguments reads these itself; a single
  Slurm/MPI task or a single-host TPU needs no initialization.
  """
  env = os.environ
  if env.get('JAX_COORDINATOR_ADDRESS') or env.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return True
  if int(env.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_JOB_ID' in env:
    return True
  if int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return True
  return ',' in env.get('TPU_WORKER_HOSTNAMES', '')


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Joins a multi-process job, from explicit arguments or the cluster's environment.

  Must run before anything touches the devices. Returns whether it initialized.
  """
  if coordinator_address or num_processes:
    jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True
  if _cluster_environment():
    jax.distributed.initialize()
    return True
  return False


def create_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis `data` over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def platform(mesh: Mesh) -> str:
  """The kind of device the mesh holds: 'cpu', 'gpu' or 'tpu'."""
  return mesh.devices.flat[0].platform


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, *, seeds: bool = False) -> NamedSharding:
  """Leading (batch) axis split over `data`; the other axes whole. With `seeds`, batches
  of several seeds stacked ([seeds, batch, ...]): each seed's batch split as one would be,
  so every device computes its rows of every seed's step."""
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS) if seeds else PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
  """Places a pytree (identical on every process) whole on every device."""
  return jax.device_put(tree, replicated_sharding(mesh))


def shard_batch(batch, mesh: Mesh, *, seeds: bool = False):
  """One global jax.Array per leaf, from this process's numpy slice of the batch (of each
  seed's batch, with `seeds`)."""
  sharding = batch_sharding(mesh, seeds=seeds)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
