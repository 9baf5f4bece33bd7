"""CIFAR-10 ResNets and plain nets of He et al. 2015 (Section 4.2, Table 6), by depth.

  python train.py --config=configs/resnet_cifar10.py:56 --workdir=runs/r56
  python train.py --config=configs/resnet_cifar10.py:56,plain --workdir=runs/plain56
  python train.py --config=configs/resnet_cifar10.py:110 --workdir=runs/r110
  python train.py --config=configs/resnet_cifar10.py:56,plain,45k --workdir=runs/plain56_val

The argument is DEPTH (6n+2: 20, 32, 44, 56, 110, 1202), optionally followed
by `,plain` for the plain network of the same depth (no shortcuts) and `,45k`
for the paper's split: train on the first 45k training images, evaluate on the
other 5k (the paper's Figure 6 curves and its choice of schedule).

Published test error (Table 6): ResNet-20 8.75%, 32 7.51%, 44 7.17%, 56 6.97%,
110 6.43% (best of 5; mean 6.61 +- 0.16), 1202 7.93%. The plain nets have no
table entry; Figure 6 shows them degrading with depth (plain-56 worse than
plain-20).
Recipe (Section 4.2): option A, batch 128, weight decay 1e-4, momentum 0.9,
learning rate 0.1 divided by 10 at 32k and 48k iterations, stop at 64k; 4-pixel
padding, random 32x32 crops and flips; ResNet-110 (and 1202) first train at
0.01 for 400 iterations. Table 6's test errors come from training on all 50k
images; `,45k` holds out 5k as the paper does for its curves.
Hardware: ResNet-20 about 20 minutes on one modern GPU, ResNet-110 about 1.5
hours, ResNet-1202 about a day; hours to days on 2 CPU cores.
"""

from resnet_jax import defaults

PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)
WARMUP_DEPTH = 110  # "we use 0.01 to warm up the training until the training error is below 80%"
# From this depth the units of a stage run under lax.scan: the same network, compiled in
# seconds where the unrolled one takes minutes (ResNet-1202; docs/benchmarks.md). Shallower networks
# stay unrolled, which trains faster (on CPU 1.2x for ResNet-56 and -110; docs/benchmarks.md).
SCAN_DEPTH = 1000


def get_config(arg: str = '20'):
  depth, *options = arg.split(',')
  if len(set(options)) != len(options) or not set(options) <= {'plain', '45k'}:
    raise ValueError(
      f"config argument {arg!r}: expected DEPTH or DEPTH,plain, optionally ,45k (e.g. '56,plain')"
    )
  config = defaults.get_config()
  model = config.model
  model.depth = int(depth)
  model.stem = 'cifar'
  model.block = 'basic'
  model.width = 16
  model.shortcut = 'none' if 'plain' in options else 'A'
  model.scan = model.depth >= SCAN_DEPTH

  config.data.dataset = 'cifar10'
  held_out = '45k' in options
  config.data.train_split = 'train[:45000]' if held_out else 'train'
  config.data.eval_split = 'train[45000:]' if held_out else 'test'
  config.data.image_size = 32
  config.data.preprocess = 'cifar'

  config.train.batch_size = 128
  config.train.num_steps = 64_000
  config.train.eval_every = 2_000
  config.train.checkpoint_every = 2_000

  optim = config.optim
  optim.learning_rate = 0.2  # per 256 images: 0.1 at batch 128
  optim.schedule = 'piecewise'
  optim.boundaries = (32_000, 48_000)
  optim.boundaries_unit = 'steps'
  optim.weight_decay = 1e-4
  optim.momentum = 0.9
  if model.depth >= WARMUP_DEPTH:
    optim.warmup = 'constant'
    optim.warmup_steps = 400
    optim.warmup_factor = 0.1  # 0.01 for the first 400 iterations
  return config
