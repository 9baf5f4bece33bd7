"""Gradient flow and layer responses of plain vs residual networks, as PNG and JSON.

  python -m resnet_jax.analysis.signals --config=configs/degradation_fashion_mnist.py \
    --grid model.shortcut=none,A --grid model.depth=20,56 --out=docs/results/signals_init.png
  python -m resnet_jax.analysis.signals --workdir=runs/degradation/shortcut-none_depth-20 \
    --workdir=runs/degradation/shortcut-A_depth-20 --out=docs/results/signals_trained.png

For each network, on one training batch:
- the gradient norm of the loss with respect to each convolution's kernel (and the
  classifier's), layer by layer from the input: skip connections keep it from vanishing
  towards the input of deep networks;
- the standard deviation of each 3x3 layer's response in the residual units (after BN,
  before the ReLU or the addition; pre-activation units: the convolution's output), as in
  He et al. 2015's Figure 7: residual functions respond less than plain layers.
`--config` (with `--grid` points) gives networks at initialization, in training mode;
each `--workdir` gives a run's latest checkpoint (its own config.json), in evaluation
mode (running BN statistics), as the paper measures trained networks. At initialization
BN normalizes with the batch's own statistics, so every response there has std ~1 by
construction: the gradient norms are the informative half. The numbers go to a JSON
file beside the PNG.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from resnet_jax import cli, metrics
from resnet_jax.analysis import grid
from resnet_jax.errors import ConfigError
from resnet_jax.models import layout

FLAGS = flags.FLAGS


def define_flags():
  cli.define_config_flag()
  flags.DEFINE_multi_string('grid', [], 'KEY=V1,V2,...: networks at initialization.')
  flags.DEFINE_multi_string('workdir', [], 'A run whose latest checkpoint to measure.')
  flags.DEFINE_integer('batch_size', 128, 'Images of the measured batch.')
  flags.DEFINE_string('out', None, 'The PNG to write (and a .json beside it).', required=True)


def _layers(model) -> list[tuple[str, object]]:
  """(name, convolution) from the input up: the stem, then each unit's branch."""
  layers = [('stem', model.stem.conv)]
  for s, stage in enumerate(model.stages):
    for u, unit in enumerate(stage.units):
      layers += [(f's{s + 1}u{u + 1}c{c + 1}', conv) for c, conv in enumerate(unit.convs)]
  return layers


def gradient_norms(model, images, labels) -> list[tuple[str, float]]:
  """(layer, |dloss/dkernel|) of the stem, each branch convolution and the classifier."""

  @nnx.jit  # One compilation, not one per operation.
  def norms(model):
    def loss_fn(model):
      # a fixed key: one mask for a network with a dropout shortcut (ignored otherwise)
      return jnp.mean(metrics.cross_entropy(model(images, key=jax.random.key(0)), labels))

    grads = nnx.grad(loss_fn)(model)
    as_model = nnx.merge(nnx.graphdef(model), grads, nnx.state(model, nnx.Not(nnx.Param)))
    kernels = [conv.kernel[...] for _, conv in _layers(as_model)] + [as_model.head.kernel[...]]
    return [jnp.linalg.norm(k) for k in kernels]

  names = [name for name, _ in _layers(model)] + ['head']
  return [(name, float(v)) for name, v in zip(names, norms(model), strict=True)]


def response_stds(model, images) -> list[tuple[str, float]]:
  """(layer, std) of each 3x3 branch layer's response, from the input up."""

  @nnx.jit
  def stds(model):
    _, sown = nnx.capture(model, nnx.Intermediate)(images, key=jax.random.key(0))
    return jax.tree.map(lambda y: jnp.std(y.astype(jnp.float32)), sown)

  units = [unit for stage in model.stages for unit in stage.units]
  for unit in units:
    unit.sow_responses = True
  try:
    sown = stds(model)
  finally:
    for unit in units:
      unit.sow_responses = False
  by_unit = {}
  for path, value in nnx.to_flat_state(sown):
    stage, unit = path[1], path[3]  # ('stages', s, 'units', u, 'responses')
    by_unit[(stage, unit)] = value.get_value()
  result = []
  for s, stage in enumerate(model.stages):
    for u, unit in enumerate(stage.units):
      for c, (conv, std) in enumerate(zip(unit.convs, by_unit[(s, u)], strict=True)):
        if conv.kernel.shape[0] == 3:
          result.append((f's{s + 1}u{u + 1}c{c + 1}', float(std)))
  return result


def describe(config) -> str:
  kind = 'plain' if config.model.shortcut == 'none' else f'ResNet ({config.model.shortcut})'
  return f'{kind}-{config.model.depth}'


def measure(config, state=None, *, batch_size: int) -> dict:
  """Both signals of the network `config` describes: at init, or with `state`'s weights."""
  from resnet_jax import data, experiment, parallel  # Here: TensorFlow loads when measuring.

  config = config.copy_and_resolve_references()
  # Units one by one (the responses are sown per unit); same parameters and numerics.
  config.model.scan = config.model.remat = False
  setup = experiment.setup(config, parallel.create_mesh())
  state = state if state is not None else setup.state
  trained = state is not setup.state
  model = nnx.merge(setup.graphdef, state.params, state.batch_stats)
  batch = next(
    data.create_train_iterator(config.data, global_batch_size=batch_size, seed=config.seed)
  )
  images, labels = jnp.asarray(batch['image']), jnp.asarray(batch['label'])
  if trained:
    model.eval()
  stds = response_stds(model, images)
  model.train()  # Gradients as in training (this updates the model's running statistics).
  return {
    'network': describe(config),
    'step': int(state.step),
    'response_mode': 'eval' if trained else 'train',
    'gradient_norms': gradient_norms(model, images, labels),
    'response_stds': stds,
  }


def _restore(workdir):
  from resnet_jax import checkpoint, experiment, parallel

  config = checkpoint.load_config(workdir)
  if config is None:
    raise ConfigError(f'--workdir={workdir}: no config.json (not a run directory)')
  setup = experiment.setup(config, parallel.create_mesh(), pretrained_weights=False)
  ckpt = checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints', read_only=True)
  if ckpt.latest_step() is None:
    raise ConfigError(f'--workdir={workdir}: no checkpoint yet')
  # One entry per unit, as checkpoints hold it and as `measure`'s unrolled network takes it.
  state, _ = ckpt.restore(layout.to_per_unit(setup.state))
  ckpt.close()
  return config, state


def plot(results: list[dict], path):
  """Two panels: gradient norms (log scale) and response stds, by layer index."""
  from resnet_jax.analysis.plots import plt  # matplotlib with the file-only backend

  fig, (grad_ax, std_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
  for r in results:
    label = f'{r["network"]} (step {r["step"]})'
    grad_ax.semilogy([v for _, v in r['gradient_norms']], '.-', label=label)
    std_ax.plot([v for _, v in r['response_stds']], '.-', label=label)
  grad_ax.set(xlabel='layer (input to output)', ylabel='gradient norm of the kernel')
  std_ax.set(xlabel='3x3 layer index (original)', ylabel='std of the response')
  grad_ax.set_title('gradient norms, one training batch')
  std_ax.set_title('layer responses (after BN, before addition/ReLU)')
  std_ax.set_ylim(bottom=0)  # At initialization every std is ~1: show that, not its noise.
  for ax in (grad_ax, std_ax):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config is None and not FLAGS.workdir:
    raise ConfigError('give --config (networks at initialization) and/or --workdir runs')
  results = []
  if FLAGS.config is not None:
    points = grid.points([grid.parse_axis(spec) for spec in FLAGS.grid])
    configs = [grid.apply(FLAGS.config, p) for p in points]
    results += [measure(config, batch_size=FLAGS.batch_size) for config in configs]
  for workdir in FLAGS.workdir:
    config, state = _restore(workdir)
    results.append(measure(config, state, batch_size=FLAGS.batch_size))
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  plot(results, out)
  out.with_suffix('.json').write_text(json.dumps(results, indent=1) + '\n')
  for r in results:
    grads = np.array([v for _, v in r['gradient_norms']])
    stds = np.array([v for _, v in r['response_stds']])
    print(
      f'{r["network"]} step {r["step"]}: gradient norm first/last layer '
      f'{grads[0]:.3g}/{grads[-2]:.3g}, response std mean {stds.mean():.3g}'
    )
  print(f'wrote {out} and {out.with_suffix(".json")}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
