"""Reference ResNets in PyTorch for tests/test_pretrained.py, run in a process of its own.

  python tests/torch_reference.py make --out=DIR --size=72
  python tests/torch_reference.py run --arch=resnet18 --weights=FILE --inputs=NPZ --out=NPZ
  python tests/torch_reference.py train --arch=resnet18 --weights=FILE --inputs=NPZ --out=NPZ --lr=0

`make` builds torchvision's and timm's ResNet-18 and ResNet-50 with random
weights and random BN statistics and writes, per network, its state dict
(DIR/<lib>_<arch>.safetensors, and .pth for torchvision's ResNet-18) and
DIR/<lib>_<arch>.npz: an NHWC input batch, the eval-mode logits and the four
stage outputs c2..c5 (NHWC). It also writes timm's resnet50d state dict, a
layout that cannot be imported. `run` loads a .safetensors file into
torchvision's network with `load_state_dict(strict=True)` and writes its
logits for the given inputs. `train` loads it the same way, runs training-mode
passes over the inputs' `train_images` [steps, batch, H, W, C] (SGD steps on the
cross-entropy with `train_labels` where --lr > 0; at 0, forward passes only, which
update BN's running statistics), then writes the eval-mode outputs for `images`.
Only torch, torchvision, timm and safetensors are
imported here: torchvision next to TensorFlow in one process crashes.
"""

import argparse

import numpy as np
import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file

NETWORKS = (('torchvision', 'resnet18'), ('torchvision', 'resnet50'))
NETWORKS += (('timm', 'resnet18'), ('timm', 'resnet50'))


def build(lib: str, arch: str) -> torch.nn.Module:
  if lib == 'timm':
    return timm.create_model(arch, pretrained=False)
  return getattr(torchvision.models, arch)()


def randomize_batch_norms(model: torch.nn.Module) -> None:
  """BN scales, offsets and running statistics away from their 1/0 defaults."""
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 2.0)


def outputs(model: torch.nn.Module, images_nchw: torch.Tensor) -> dict[str, np.ndarray]:
  """Eval-mode logits and the outputs of layer1..layer4 as c2..c5, NHWC."""
  stages = {}
  for i in range(1, 5):
    layer = getattr(model, f'layer{i}')
    layer.register_forward_hook(lambda _m, _x, y, name=f'c{i + 1}': stages.__setitem__(name, y))
  with torch.no_grad():
    logits = model(images_nchw)
  result = {name: y.permute(0, 2, 3, 1).numpy() for name, y in stages.items()}
  return {'logits': logits.numpy(), **result}


def make(out: str, size: int) -> None:
  for seed, (lib, arch) in enumerate(NETWORKS):
    torch.manual_seed(seed)
    model = build(lib, arch).eval()
    randomize_batch_norms(model)
    images_nchw = torch.randn(2, 3, size, size)
    state = model.state_dict()
    save_file(state, f'{out}/{lib}_{arch}.safetensors')
    if (lib, arch) == ('torchvision', 'resnet18'):
      torch.save(state, f'{out}/{lib}_{arch}.pth')
    arrays = outputs(model, images_nchw)
    np.savez(f'{out}/{lib}_{arch}.npz', images=images_nchw.permute(0, 2, 3, 1).numpy(), **arrays)
  save_file(build('timm', 'resnet50d').state_dict(), f'{out}/timm_resnet50d.safetensors')


def run(arch: str, weights: str, inputs: str, out: str) -> None:
  model = build('torchvision', arch).eval()
  model.load_state_dict(load_file(weights), strict=True)
  images_nchw = torch.from_numpy(np.load(inputs)['images']).permute(0, 3, 1, 2)
  np.savez(out, **outputs(model, images_nchw.contiguous()))


def train(arch: str, weights: str, inputs: str, out: str, lr: float) -> None:
  model = build('torchvision', arch)
  model.load_state_dict(load_file(weights), strict=True)
  arrays = np.load(inputs)
  optimizer = torch.optim.SGD(model.parameters(), lr=lr)
  model.train()
  for images_nhwc, labels in zip(arrays['train_images'], arrays['train_labels'], strict=True):
    with torch.set_grad_enabled(lr > 0):
      logits = model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous())
    if lr > 0:
      optimizer.zero_grad()
      torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels).long()).backward()
      optimizer.step()
  model.eval()
  images_nchw = torch.from_numpy(arrays['images']).permute(0, 3, 1, 2).contiguous()
  np.savez(out, **outputs(model, images_nchw))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('mode', choices=('make', 'run', 'train'))
  parser.add_argument('--out', required=True)
  parser.add_argument('--size', type=int, default=72)
  parser.add_argument('--arch')
  parser.add_argument('--weights')
  parser.add_argument('--inputs')
  parser.add_argument('--lr', type=float, default=0.0)
  args = parser.parse_args()
  torch.set_num_threads(1)
  if args.mode == 'make':
    make(args.out, args.size)
  elif args.mode == 'run':
    run(args.arch, args.weights, args.inputs, args.out)
  else:
    train(args.arch, args.weights, args.inputs, args.out, args.lr)


if __name__ == '__main__':
  main()
