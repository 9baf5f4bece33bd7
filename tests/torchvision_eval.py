"""torchvision's ImageNet eval transform, for tests/test_preprocess_parity.py, in a process of its
own (torchvision next to TensorFlow in one process crashes).

  python tests/torchvision_eval.py --inputs=IN.npz --out=OUT.npz --size=224 --resize=232

IN.npz holds encoded images (PNG or JPEG bytes as uint8 arrays); OUT.npz the same keys,
each Resize(resize, bilinear, antialias=True) + CenterCrop(size) + ToTensor + Normalize
(ImageNet mean/std) of the PIL image, as float32 [size, size, 3]. Only torch, torchvision,
PIL and numpy are imported here.
"""

import argparse
import io

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--inputs', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--resize', type=int, default=232)
  args = parser.parse_args()
  torch.set_num_threads(1)
  transform = transforms.Compose(
    [
      transforms.Resize(args.resize, transforms.InterpolationMode.BILINEAR, antialias=True),
      transforms.CenterCrop(args.size),
      transforms.ToTensor(),
      transforms.Normalize(MEAN, STD),
    ]
  )
  outputs = {}
  for name, encoded in np.load(args.inputs).items():
    image = Image.open(io.BytesIO(encoded.tobytes())).convert('RGB')
    outputs[name] = transform(image).permute(1, 2, 0).numpy()
  np.savez(args.out, **outputs)


if __name__ == '__main__':
  main()
