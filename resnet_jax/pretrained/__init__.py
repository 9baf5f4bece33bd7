"""Pretrained weights: torchvision's and timm's ResNets in, our parameters out.

  model = pretrained.load('torchvision', 'resnet50', 'resnet50-11ad3fa6.pth')
  logits = model(images_nhwc)                  # eval mode, the file's classifier
  c2, c3, c4, c5 = model.features(images_nhwc)  # backbone: strides 4, 8, 16, 32
  pretrained.export(model, 'resnet50.safetensors')  # torchvision layout again

Every array of the file is checked against the network before anything is
assigned: a missing, unexpected or misshapen key is a ConfigError that names it
(and the network the file holds, when it is another one).
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from resnet_jax.errors import ConfigError
from resnet_jax.models import ResNet, create_model, layout
from resnet_jax.pretrained import files, layouts
from resnet_jax.pretrained.layouts import ARCHS, SOURCES

__all__ = ['ARCHS', 'SOURCES', 'assign', 'export', 'load']
HEAD_NAMES = ('fc.weight', 'fc.bias')


def load(source: str, arch: str, path, **model_overrides) -> ResNet:
  """`arch` ('resnet18' ... 'resnet152') with the weights and BN statistics of the file
  `path` (torchvision or timm layout), in eval mode, with the file's classifier.
  `model_overrides`: `config.model` fields that leave the parameters as they are, e.g.
  dtype='bfloat16'."""
  layouts.check_source(source, arch)
  arrays = files.read(path)
  num_classes = arrays['fc.weight'].shape[0] if 'fc.weight' in arrays else 1000
  in_channels = arrays['conv1.weight'].shape[1] if 'conv1.weight' in arrays else 3
  model = nnx.eval_shape(
    lambda: create_model(
      layouts.model_config(arch, **model_overrides),
      num_classes=num_classes,
      in_channels=in_channels,
      rngs=nnx.Rngs(0),
    )
  )
  assign(model, arrays, source=source, path=path)
  model.eval()
  return model


def _state(model: ResNet) -> tuple[nnx.State, dict[tuple, object]]:
  """The parameters and BN statistics, and the same as {path: array}, one path per unit."""
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  return state, traverse_util.flatten_dict(layout.to_per_unit(nnx.to_pure_dict(state)))


def assign(model: ResNet, arrays: dict, *, source: str, path, head: bool = True) -> None:
  """Sets the model's parameters and BN statistics to `arrays` (a state dict of `source`'s
  layout, which torchvision and timm share, read from `path`), in place. `head=False`
  leaves the classifier as it is."""
  layouts.check_source(source)
  layouts.check_representable(model.spec)
  state, flat = _state(model)
  ours = {layouts.torch_name(p): p for p in flat}
  given = {n for n in arrays if not n.endswith(layouts.IGNORED_SUFFIX)}
  if not head:
    ours = {n: p for n, p in ours.items() if n not in HEAD_NAMES}
    given -= set(HEAD_NAMES)
  _check_names(given, ours, path)
  for name, p in ours.items():
    value = layouts.to_ours(name, arrays[name])
    if value.shape != flat[p].shape:
      wanted = layouts.to_torch(name, np.broadcast_to(np.float32(0), flat[p].shape)).shape
      hint = ': the classes differ, leave the head out' if name in HEAD_NAMES else ''
      raise ConfigError(
        f'{path}: {name!r} has shape {tuple(arrays[name].shape)}, this network needs '
        f'{tuple(wanted)} ({"/".join(map(str, p))}){hint}'
      )
    flat[p] = jnp.asarray(value, jnp.float32)
  arrays_as_stored = layout.to_stacked(traverse_util.unflatten_dict(flat), model.spec)
  nnx.replace_by_pure_dict(state, arrays_as_stored)
  nnx.update(model, state)


def _check_names(given: set, ours: dict, path) -> None:
  """A ConfigError naming the first missing or unexpected key (and the file's network)."""
  missing = sorted(n for n in ours if n not in given)
  unexpected = sorted(given - ours.keys())
  if not (missing or unexpected):
    return
  holds, wanted = layouts.describe(given), layouts.describe(ours)
  if missing:
    key = f'it has no {missing[0]!r}'
  else:
    key = f'it has {unexpected[0]!r}, which this network does not'
  more = len(missing) + len(unexpected) - 1
  more = f' ({more} more keys differ)' if more else ''
  if holds != wanted:
    raise ConfigError(f'{path} holds {holds}, not {wanted}: {key}{more}')
  raise ConfigError(f'{path} does not match {wanted}: {key}{more}')


def export(model: ResNet, path) -> None:
  """Writes the parameters and BN statistics as a .safetensors file in torchvision's layout
  (loadable with `load('torchvision', ...)` or torchvision's `load_state_dict`)."""
  layouts.check_representable(model.spec)
  arrays = {}
  for p, value in _state(model)[1].items():
    name = layouts.torch_name(p)
    arrays[name] = layouts.to_torch(name, np.asarray(value, np.float32))
  files.write(path, arrays)
