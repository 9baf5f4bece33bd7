"""Converts a torchvision or timm ResNet weight file, once, into a checked .safetensors file.

  python -m resnet_jax.pretrained --source=torchvision --arch=resnet50 \
    --src=resnet50-11ad3fa6.pth --dst=weights/

Reads SRC (.pth needs torch; .safetensors does not), loads it into our network
(every key and shape checked), and writes it back from our parameters as
DST/<arch>.safetensors in torchvision's layout, which loads anywhere without
torch. Prints one JSON line: the file written, the classes, and SRC's sha256
(torchvision's file names carry its first 8 hex digits).
"""

import hashlib
import json
import os

from absl import flags

from resnet_jax import cli, pretrained

_SOURCE = flags.DEFINE_enum('source', None, pretrained.SOURCES, 'Layout of the file.')
_ARCH = flags.DEFINE_string('arch', None, f'One of {", ".join(pretrained.ARCHS)}.')
_SRC = flags.DEFINE_string('src', None, 'The weight file (.pth/.pt/.bin or .safetensors).')
_DST = flags.DEFINE_string('dst', None, 'Directory for <arch>.safetensors.')
flags.mark_flags_as_required(['source', 'arch', 'src', 'dst'])


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def main(argv):
  if len(argv) > 1:
    raise cli.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    model = pretrained.load(_SOURCE.value, _ARCH.value, _SRC.value)
  except ValueError as e:
    raise cli.ConfigError(str(e)) from e
  os.makedirs(_DST.value, exist_ok=True)
  dst = os.path.join(_DST.value, f'{_ARCH.value}.safetensors')
  pretrained.export(model, dst)
  print(
    json.dumps(
      {'dst': dst, 'num_classes': model.head.out_features, 'src_sha256': sha256(_SRC.value)}
    )
  )


if __name__ == '__main__':
  cli.run(main)
