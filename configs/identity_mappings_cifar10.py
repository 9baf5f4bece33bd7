"""He et al. 2016, "Identity Mappings in Deep Residual Networks", Tables 1-3 on CIFAR-10.

  python train.py --config=configs/identity_mappings_cifar10.py:exclusive --workdir=runs/im_excl
  python train.py --config=configs/identity_mappings_cifar10.py:preact,164 --workdir=runs/im_p164
  python train.py --config=configs/identity_mappings_cifar10.py:preact,1001 --workdir=runs/p1001
  python train.py --config=configs/identity_mappings_cifar10.py:preact,one_layer --workdir=runs/p1l

The argument is VARIANT[,DEPTH] or VARIANT,one_layer: DEPTH 110 (basic units, the
default), 164 or 1001 (bottleneck units, projection shortcuts where shapes change:
option B); `one_layer` is Table 3's ResNet-110 of 108 one-layer units (36 per stage).
Published CIFAR-10 test error, median of 5 runs (Table 1: ResNet-110; Table 2:
ResNet-110 / ResNet-164; Table 3 adds ResNet-1001):
  original         6.61 / 5.93; ResNet-1001 7.61          (v1, option A)
  constant         12.35  (h and F both x 0.5; h x 0.5 alone: fails, > 20%)
  exclusive        8.70   (gate bias -6; -7: 9.81; 0 to -5: fails)
  shortcut_only    12.86  (gate bias 0; --config.model.gate_bias=-6: 6.91)
  conv_shortcut    12.22  (a 1x1 convolution on every shortcut: option C)
  dropout          fails, > 20  (a Bernoulli(0.5) mask on the shortcut; 0.5 h in evaluation)
  bn_after_add     8.17 / 6.50
  relu_before_add  7.84 / 6.14
  relu_preact      6.71 / 5.91
  preact           6.37 / 5.46; ResNet-1001 4.92 (4.62 at batch 64, Table 4)
  one-layer units  ResNet-110: original,one_layer 9.90; preact,one_layer 8.91 (Table 3)
Recipe (appendix): as He et al. 2015 (configs/resnet_cifar10.py): batch 128, SGD with
momentum 0.9, weight decay 1e-4, rate 0.1 divided by 10 at 32k and 48k iterations, 64k
in all, and for every network 0.01 for the first 400 iterations.
Hardware (estimates): ResNet-110 about 1.5 GPU-hours, ResNet-164 about 3, ResNet-1001
about a GPU-day; each Table 1-2 row 5 runs. About 10 s/step (days) on 2 CPU cores.
"""

from configs import resnet_cifar10

# variant -> config.model fields
VARIANTS = {
  'original': {},
  'constant': {'gate': 'constant'},
  'exclusive': {'gate': 'exclusive', 'gate_bias': -6.0},
  'shortcut_only': {'gate': 'shortcut_only', 'gate_bias': 0.0},
  'conv_shortcut': {'shortcut': 'C'},
  'dropout': {'gate': 'dropout'},
  'bn_after_add': {'variant': 'bn_after_add'},
  'relu_before_add': {'variant': 'relu_before_add'},
  'relu_preact': {'variant': 'relu_preact'},
  'preact': {'variant': 'preact'},
}
BOTTLENECK_DEPTHS = (164, 1001)


def get_config(arg: str = 'original'):
  variant, *depth = arg.split(',')
  if variant not in VARIANTS or len(depth) > 1:
    raise ValueError(
      f'config argument {arg!r}: expected VARIANT[,DEPTH] or VARIANT,one_layer, VARIANT one '
      f'of {", ".join(VARIANTS)}'
    )
  one_layer = depth == ['one_layer']
  depth = 110 if one_layer or not depth else int(depth[0])
  config = resnet_cifar10.get_config(str(depth) if depth not in BOTTLENECK_DEPTHS else '20')
  model = config.model
  if depth in BOTTLENECK_DEPTHS:
    model.depth, model.block, model.shortcut = depth, 'bottleneck', 'B'
    model.scan = depth >= resnet_cifar10.SCAN_DEPTH  # as resnet_cifar10 does for its depths
  if one_layer:
    model.block = 'one_layer'  # 3 x 36 units + 2 = 110 layers
  for field, value in VARIANTS[variant].items():
    model[field] = value
  optim = config.optim
  optim.warmup = 'constant'
  optim.warmup_steps = 400
  optim.warmup_factor = 0.1  # 0.01 for the first 400 iterations, for every depth here
  return config
