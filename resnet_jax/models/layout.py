"""The two layouts of a network's state: one entry per unit, or scanned units stacked.

With `model.scan` a stage stores its first unit as `units/0` and the units
after it as one `repeated` entry whose leaves carry a leading axis of length
n-1 (`Stage`): the train step scans over them without restacking. Without
scan, and in checkpoints and pretrained weight files, each unit is its own
entry `units/<i>`. The converters below work on any pytree that holds the
model's pure dicts (`nnx.to_pure_dict` of parameters or BN statistics, a
TrainState, optax states such as `TraceState(trace=params_like)`), on arrays
or on `jax.ShapeDtypeStruct` leaves; they leave everything else as it is.
"""

import jax
import jax.numpy as jnp

UNITS, REPEATED = 'units', 'repeated'


def _is_stacked_stage(node) -> bool:
  return isinstance(node, dict) and REPEATED in node


def _is_per_unit_stage(node) -> bool:
  """A stage with more than one unit, one entry each (a stage of one has nothing to stack)."""
  return isinstance(node, dict) and REPEATED not in node and len(node.get(UNITS, ())) > 1


def in_stacked_stage(path) -> bool:
  """Whether a leaf at `path` (a jax key path) is stacked, one slice per unit."""
  return any(getattr(key, 'key', None) == REPEATED for key in path)


def _slice(leaf, i: int):
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype, sharding=leaf.sharding)
  return leaf[i]


def _stack(*leaves):
  first = leaves[0]
  if isinstance(first, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype, sharding=first.sharding)
  return jnp.stack(leaves)


def _unstack_stage(stage: dict) -> dict:
  repeated = stage[REPEATED]
  length = jax.tree.leaves(repeated)[0].shape[0]
  units = {0: stage[UNITS][0]}
  units.update({i + 1: jax.tree.map(lambda x, i=i: _slice(x, i), repeated) for i in range(length)})
  rest = {k: v for k, v in stage.items() if k not in (UNITS, REPEATED)}
  return {**rest, UNITS: units}


def _stack_stage(stage: dict) -> dict:
  units = stage[UNITS]
  repeated = [units[i] for i in range(1, len(units))]
  return {**stage, UNITS: {0: units[0]}, REPEATED: jax.tree.map(_stack, *repeated)}


def to_per_unit(tree):
  """`tree` with every stacked stage split into one entry per unit (the checkpoint layout)."""
  convert = lambda node: _unstack_stage(node) if _is_stacked_stage(node) else node
  return jax.tree.map(convert, tree, is_leaf=_is_stacked_stage)


def to_stacked(tree, spec_or_model_config):
  """`tree` (either layout) in the layout that the model of `spec_or_model_config` stores.

  `spec_or_model_config`: a NetworkSpec or `config.model`, whose `scan` decides:
  stages of more than one unit stacked with scan, one entry per unit without.
  """
  tree = to_per_unit(tree)
  if not spec_or_model_config.scan:
    return tree
  convert = lambda node: _stack_stage(node) if _is_per_unit_stage(node) else node
  return jax.tree.map(convert, tree, is_leaf=_is_per_unit_stage)
