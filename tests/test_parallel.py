"""Mesh, shardings and batch placement, on 8 simulated CPU devices (in a subprocess,
since the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from resnet_jax import parallel

_EIGHT_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    from resnet_jax import parallel
    assert jax.device_count() == 8
    mesh = parallel.create_mesh()
    assert mesh.axis_names == ('data',) and mesh.devices.shape == (8,)
    batch = {'image': np.arange(64 * 2, dtype=np.float32).reshape(64, 2),
             'label': np.arange(64, dtype=np.int32)}
    placed = parallel.shard_batch(batch, mesh)
    shards = placed['label'].addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (8,) for s in shards)
    assert sorted(int(s.data[0]) for s in shards) == list(range(0, 64, 8))
    np.testing.assert_array_equal(np.asarray(placed['image']), batch['image'])
    params = parallel.replicate({'w': np.ones((3, 3))}, mesh)
    assert params['w'].sharding.is_fully_replicated
    # A jitted step over a sharded batch and replicated params: the mean is global.
    f = jax.jit(lambda p, b: (p['w'].sum() * b['image']).mean())
    assert float(f(params, placed)) == float(9 * batch['image'].mean())
    print('ok')
""")


def test_eight_devices_in_a_subprocess():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  root = os.path.dirname(os.path.dirname(os.path.abspath(parallel.__file__)))
  env['PYTHONPATH'] = root
  result = subprocess.run(
    [sys.executable, '-c', _EIGHT_DEVICES], capture_output=True, text=True, env=env, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'


def test_one_device_placement():
  mesh = parallel.create_mesh()
  batch = parallel.shard_batch({'x': np.ones((4, 2), np.float32)}, mesh)
  assert batch['x'].shape == (4, 2) and isinstance(batch['x'], jax.Array)


@pytest.mark.parametrize(
  'env,expected',
  [
    ({}, False),
    ({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '1'}, False),
    ({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '4'}, True),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, True),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'a,b'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'a'}, False),
  ],
)
def test_cluster_detection(monkeypatch, env, expected):
  for name in (
    'SLURM_JOB_ID',
    'SLURM_NTASKS',
    'OMPI_COMM_WORLD_SIZE',
    'JAX_COORDINATOR_ADDRESS',
    'MEGASCALE_COORDINATOR_ADDRESS',
    'TPU_WORKER_HOSTNAMES',
  ):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  assert parallel.initialize_distributed() is expected
  assert calls == ([{}] if expected else [])
  calls.clear()
  assert parallel.initialize_distributed('host:1234', 2, 1)
  assert calls == [{'coordinator_address': 'host:1234', 'num_processes': 2, 'process_id': 1}]
