"""Weight files as flat {name: numpy array} dicts: safetensors always, PyTorch pickles with torch.

`.safetensors` is read and written with `safetensors.numpy` (no torch needed).
`.pth`/`.pt`/`.bin` (torchvision's downloads, timm's `pytorch_model.bin`) are
read with `torch.load(weights_only=True)`, which never runs code from the file,
when torch is installed. torch is imported only here and only then: with
TensorFlow in the same process, importing torchvision crashes (triton), while
torch.load alone works. safetensors is imported when a file is read or written,
so that training without pretrained weights does not need it.
"""

import os

import numpy as np

from resnet_jax.errors import ConfigError

TORCH_SUFFIXES = ('.pth', '.pt', '.bin')


def check_path(path) -> None:
  """A ConfigError unless `path` is an existing file of a kind `read` reads."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f'weights file {path} does not exist')
  if not path.endswith(('.safetensors', *TORCH_SUFFIXES)):
    raise ConfigError(f'{path}: expected a .safetensors or a {"/".join(TORCH_SUFFIXES)} file')


def read(path) -> dict[str, np.ndarray]:
  """The arrays of a weight file, floating point ones as float32."""
  check_path(path)
  path = os.fspath(path)
  if path.endswith('.safetensors'):
    import safetensors.numpy

    arrays = safetensors.numpy.load_file(path)
  else:
    arrays = _read_torch(path)
  return {
    name: a.astype(np.float32, copy=False) if np.issubdtype(a.dtype, np.floating) else a
    for name, a in arrays.items()
  }


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise ConfigError(
      f'{path} is a PyTorch file and torch is not installed: install torch, or convert the file '
      'once where it is (python -m resnet_jax.pretrained ... --dst=DIR) and load the .safetensors'
    ) from None
  state = torch.load(path, map_location='cpu', weights_only=True)
  if not isinstance(state, dict):
    raise ConfigError(f'{path} holds a {type(state).__name__}, not a state dict')
  return {
    name: t.detach().float().numpy() if t.is_floating_point() else t.detach().numpy()
    for name, t in state.items()
    if torch.is_tensor(t)
  }


def write(path, arrays: dict[str, np.ndarray]) -> None:
  """Writes a .safetensors file (contiguous copies, as safetensors requires)."""
  import safetensors.numpy

  safetensors.numpy.save_file(
    {k: np.ascontiguousarray(v) for k, v in arrays.items()}, os.fspath(path)
  )
