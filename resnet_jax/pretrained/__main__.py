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
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_enum('source', None, pretrained.SOURCES, 'Layout of the file.')
  flags.DEFINE_string('arch', None, f'One of {", ".join(pretrained.ARCHS)}.')
  flags.DEFINE_string('src', None, 'The weight file (.pth/.pt/.bin or .safetensors).')
  flags.DEFINE_string('dst', None, 'Directory for <arch>.safetensors.')
  flags.mark_flags_as_required(['source', 'arch', 'src', 'dst'])


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  model = pretrained.load(FLAGS.source, FLAGS.arch, FLAGS.src)
  os.makedirs(FLAGS.dst, exist_ok=True)
  dst = os.path.join(FLAGS.dst, f'{FLAGS.arch}.safetensors')
  pretrained.export(model, dst)
  print(
    json.dumps(
      {'dst': dst, 'num_classes': model.head.out_features, 'src_sha256': sha256(FLAGS.src)}
    )
  )


if __name__ == '__main__':
  define_flags()
  cli.run(main)
