"""Parameter and multiply-add counts, and the per-stage table of a network.

Multiply-adds are read off the traced computation (every convolution and
matrix product in the jaxpr), so they count what actually runs, however a
layer is written, with no parameters allocated.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.models.resnet import ResNet


def count_params(model: nnx.Module) -> int:
  """Trainable parameters (BN scale and bias included, running statistics not)."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _conv_macs(eqn) -> int:
  """Output size x kernel window, over the input's dilation: a dilated input (the
  gradient of a strided convolution) is mostly inserted zeros, which no library
  multiplies."""
  rhs_shape = eqn.invars[1].aval.shape
  rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out feature, in feature, spatial...)
  per_output = math.prod(rhs_shape[d] for d in rhs_spec[1:])
  dilation = math.prod(eqn.params['lhs_dilation'])
  return math.prod(eqn.outvars[0].aval.shape) * per_output // dilation


def _dot_macs(eqn) -> int:
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  lhs_shape = eqn.invars[0].aval.shape
  return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[d] for d in lhs_contract)


def _sub_jaxprs(value):
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield value
  elif isinstance(value, tuple | list):
    for item in value:
      yield from _sub_jaxprs(item)


def jaxpr_macs(jaxpr) -> int:
  """Multiply-adds of the convolutions and dot products in a jaxpr, nested calls included."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      total += _conv_macs(eqn)
    elif name == 'dot_general':
      total += _dot_macs(eqn)
    elif name == 'cond':
      total += max(jaxpr_macs(branch.jaxpr) for branch in eqn.params['branches'])
    else:
      repeats = eqn.params.get('length', 1) if name == 'scan' else 1
      for param in eqn.params.values():
        for sub in _sub_jaxprs(param):
          total += repeats * jaxpr_macs(sub)
  return total


def count_macs(fn, *args) -> int:
  """Multiply-adds of `fn(*args)`; args may be arrays or jax.ShapeDtypeStruct."""
  return jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


@dataclasses.dataclass(frozen=True)
class LayerRow:
  name: str
  units: int
  output_shape: tuple[int, ...]  # per image: (H, W, C) or (classes,)
  params: int
  macs: int


def summarize(model: ResNet, image_shape_hwc: tuple[int, int, int]) -> list[LayerRow]:
  """One row for the stem, each stage, and the head, for a single image in eval mode."""
  graphdef, state = nnx.split(model)

  def eval_net(state) -> ResNet:
    net = nnx.merge(graphdef, state)
    net.eval()
    return net

  # (row name, units, the modules whose parameters it counts, how it runs)
  parts = [('stem', 0, [model.stem], lambda net, x: net.stem(x.astype(net.spec.unit.dtype)))]
  parts += [
    (f'stage{i + 1}', stage.num_units, [stage], lambda net, x, i=i: net.stages[i](x))
    for i, stage in enumerate(model.stages)
  ]
  parts += [('head', 0, [model.final_norm, model.head], lambda net, x: net.logits(x))]
  rows = []
  x = jax.ShapeDtypeStruct((1, *image_shape_hwc), jnp.float32)
  for name, units, modules, apply in parts:
    fn = lambda state, x, apply=apply: apply(eval_net(state), x)
    out = jax.eval_shape(fn, state, x)
    params = sum(count_params(m) for m in modules if m is not None)
    rows.append(LayerRow(name, units, tuple(out.shape[1:]), params, count_macs(fn, state, x)))
    x = out
  return rows


def format_table(rows: list[LayerRow]) -> str:
  """A fixed-width table with a total line."""
  header = f'{"layer":<8} {"units":>5} {"output":>14} {"params":>13} {"multiply-adds":>16}'
  lines = [header, '-' * len(header)]
  for r in rows:
    shape = 'x'.join(map(str, r.output_shape))
    lines.append(f'{r.name:<8} {r.units or "":>5} {shape:>14} {r.params:>13,} {r.macs:>16,}')
  lines.append('-' * len(header))
  total_params = sum(r.params for r in rows)
  total_macs = sum(r.macs for r in rows)
  lines.append(
    f'{"total":<8} {sum(r.units for r in rows):>5} {"":>14} {total_params:>13,} {total_macs:>16,}'
  )
  lines.append(
    f'{total_params / 1e6:.2f}M parameters, {total_macs / 1e9:.3g}G multiply-adds per image'
  )
  return '\n'.join(lines)
