"""PyTorch's train or eval step on the same shapes, for benchmarks.train_step.

  python -m benchmarks.torch_step --arch=resnet50 --size=224 --batch=32

torchvision's ResNet (ImageNet shapes) or He et al. 2015's CIFAR ResNet with
option A shortcuts (below), channels_last, SGD with momentum 0.9 and weight
decay, as many threads as cores; on a GPU where torch sees one (cuDNN
autotuned, bfloat16 under autocast when --dtype=bfloat16). Runs in its own
process (imports neither JAX nor TensorFlow) and prints one JSON line:
images_per_s, peak_rss_mb, torch_version, device.
"""

import argparse
import json
import os
import resource

import torch
import torchvision
from torch import nn

from benchmarks.timing import median_step_seconds


class CifarUnit(nn.Module):
  """A basic unit with the parameter-free option A shortcut."""

  def __init__(self, c_in: int, c_out: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c_out)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out)
    self.stride, self.extra_channels = stride, c_out - c_in

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    shortcut = x[:, :, :: self.stride, :: self.stride]
    if self.extra_channels:
      shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
    return torch.relu(y + shortcut)


def cifar_resnet(depth: int, num_classes: int = 10) -> nn.Module:
  n = (depth - 2) // 6
  layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
  c_in = 16
  for stage, c_out in enumerate((16, 32, 64)):
    for i in range(n):
      layers.append(CifarUnit(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
      c_in = c_out
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
  return nn.Sequential(*layers)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--arch', required=True)
  parser.add_argument('--depth', type=int, required=True)
  parser.add_argument('--size', type=int, required=True)
  parser.add_argument('--mode', choices=('train', 'eval'), default='train')
  parser.add_argument('--batch', type=int, required=True)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  args = parser.parse_args()

  torch.set_num_threads(os.cpu_count())
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.benchmark = True
  autocast = torch.autocast(device, torch.bfloat16, enabled=args.dtype == 'bfloat16')
  if args.size >= 64:
    model, classes = getattr(torchvision.models, args.arch)(), 1000
  else:
    model, classes = cifar_resnet(args.depth), 10
  model = model.to(device, memory_format=torch.channels_last)
  x = torch.randn(args.batch, 3, args.size, args.size, device=device)
  x = x.to(memory_format=torch.channels_last)
  y = torch.randint(0, classes, (args.batch,), device=device)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

  def finish():  # a CUDA step returns before the GPU has run it
    if device == 'cuda':
      torch.cuda.synchronize()

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    finish()

  def eval_step():
    with torch.no_grad(), autocast:
      model(x)
    finish()

  model.train(args.mode == 'train')
  seconds = median_step_seconds(train_step if args.mode == 'train' else eval_step, args.steps)
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({
    'images_per_s': args.batch / seconds,
    'peak_rss_mb': peak_rss_mb,
    'torch_version': torch.__version__,
    'device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu',
  }))  # fmt: skip


if __name__ == '__main__':
  main()
