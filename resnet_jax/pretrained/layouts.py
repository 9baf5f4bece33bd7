"""Parameter names and array layouts of torchvision's and timm's ResNets, against ours.

torchvision's ResNet and timm's plain `resnet18`..`resnet152` share one state
dict layout: `conv1`/`bn1` (the 7x7 stem), `layer{1-4}.{unit}.conv{k}` /
`bn{k}` (the branch), `layer{i}.0.downsample.0` / `.1` (the 1x1 projection
and its BN) and `fc`. Both are v1.5 networks (a bottleneck strides its 3x3)
with option B shortcuts, i.e. `model.stem='imagenet' shortcut='B'
variant='v1.5'` here. timm's D variants (`resnet50d`, ...) add a deep stem of
three 3x3 convolutions that our networks do not have, so they cannot be
imported.

Arrays: convolutions are OIHW there and HWIO here, the classifier is
[out, in] there and [in, out] here; BN weight/bias/running_mean/running_var
are our scale/bias/mean/var (epsilon 1e-5 on both sides);
`num_batches_tracked` has no counterpart and is ignored.
"""

import ml_collections
import numpy as np

from resnet_jax import defaults
from resnet_jax.errors import ConfigError
from resnet_jax.models import IMAGENET_DEPTHS, NetworkSpec

SOURCES = ('torchvision', 'timm')
ARCHS = {f'resnet{depth}': depth for depth in (18, 34, 50, 101, 152)}
IGNORED_SUFFIX = '.num_batches_tracked'
DEEP_STEM_KEY = 'conv1.0.weight'  # timm's deep stem (the C/D/S/T variants)
_BN_NAMES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}


def check_source(source: str, arch: str | None = None) -> None:
  """A ConfigError for an unknown source, an unknown arch or a D variant."""
  if source not in SOURCES:
    raise ConfigError(f'unknown weights source {source!r}: expected one of {", ".join(SOURCES)}')
  if arch is None or arch in ARCHS:
    return
  if arch.rstrip('d') in ARCHS:
    raise ConfigError(
      f"{arch} (timm's ResNet-D: deep 3x3 stem, average-pool shortcut) cannot be imported: "
      f'these networks have the single 7x7 stem; use one of {", ".join(ARCHS)}'
    )
  raise ConfigError(f'unknown arch {arch!r}: expected one of {", ".join(ARCHS)}')


def model_config(arch: str, **overrides) -> ml_collections.ConfigDict:
  """`config.model` of the network whose parameters `arch`'s state dict holds; `overrides`
  replace fields, e.g. dtype='bfloat16' or scan=True."""
  config = defaults.get_config().model
  config.update(
    depth=ARCHS[arch], block='auto', stem='imagenet', shortcut='B', variant='v1.5', width=64,
    zero_init_residual=False, bn_group_size=0,
  )  # fmt: skip
  config.update(overrides)  # a misspelled field fails in network_spec, naming it
  return config


def check_representable(spec: NetworkSpec) -> None:
  """A ConfigError unless the network has torchvision's structure (any depth and width)."""
  unit = spec.unit
  same_stride = unit.block == 'basic' or unit.variant == 'v1.5'
  if spec.stem != 'imagenet' or unit.shortcut != 'B' or unit.variant == 'preact' or not same_stride:
    raise ConfigError(
      "the torchvision/timm layout holds ImageNet ResNets with model.stem='imagenet', "
      f"shortcut='B' and variant='v1.5' (or 'v1' for basic units); this network has "
      f'stem={spec.stem!r}, shortcut={unit.shortcut!r}, variant={unit.variant!r}'
    )


def torch_name(path: tuple) -> str:
  """The state dict key of the array at `path` in our params/batch-stats tree."""
  match path:
    case ('stem', 'conv', 'kernel'):
      return 'conv1.weight'
    case ('stem', 'norm', leaf):
      return f'bn1.{_BN_NAMES[leaf]}'
    case ('stages', i, 'units', j, 'convs', k, 'kernel'):
      return f'layer{i + 1}.{j}.conv{k + 1}.weight'
    case ('stages', i, 'units', j, 'norms', k, leaf):
      return f'layer{i + 1}.{j}.bn{k + 1}.{_BN_NAMES[leaf]}'
    case ('stages', i, 'units', j, 'shortcut', 'conv', 'kernel'):
      return f'layer{i + 1}.{j}.downsample.0.weight'
    case ('stages', i, 'units', j, 'shortcut', 'norm', leaf):
      return f'layer{i + 1}.{j}.downsample.1.{_BN_NAMES[leaf]}'
    case ('head', 'kernel'):
      return 'fc.weight'
    case ('head', 'bias'):
      return 'fc.bias'
  raise ValueError(f'{"/".join(map(str, path))} has no torchvision/timm name')


def _transpose(name: str, array: np.ndarray, conv_axes: tuple[int, ...]) -> np.ndarray:
  if array.ndim == 4:
    return np.transpose(array, conv_axes)
  return array.T if name == 'fc.weight' else array


def to_ours(name: str, array: np.ndarray) -> np.ndarray:
  """A state dict array in our layout: OIHW -> HWIO, [out, in] -> [in, out]."""
  return _transpose(name, array, (2, 3, 1, 0))


def to_torch(name: str, array: np.ndarray) -> np.ndarray:
  """The inverse of `to_ours`."""
  return _transpose(name, array, (3, 2, 0, 1))


def describe(names) -> str:
  """What a state dict holds, e.g. 'a resnet50' or 'a timm resnet50d (deep stem)', from its keys."""
  names = set(names)
  if DEEP_STEM_KEY in names:
    return "a timm ResNet with a deep stem (a C/D variant such as resnet50d: 'conv1.0.weight')"
  units = [
    len({n.split('.')[1] for n in names if n.startswith(f'layer{stage}.')})
    for stage in (1, 2, 3, 4)
  ]
  block = 'bottleneck' if any('.conv3.' in n for n in names) else 'basic'
  depth = next(
    (d for d, layout in IMAGENET_DEPTHS.items() if layout == (block, tuple(units))), None
  )
  if depth is None:
    return f'a network with {block} units {units} per stage'
  return f'a resnet{depth}'
