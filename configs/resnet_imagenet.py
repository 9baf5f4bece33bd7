"""ImageNet ResNets of He et al. 2015 (Tables 2-4), by depth and shortcut option.

  python train.py --config=configs/resnet_imagenet.py:50 --workdir=runs/r50
  python train.py --config=configs/resnet_imagenet.py:34,A --workdir=runs/r34a
  python train.py --config=configs/resnet_imagenet.py:18,plain --workdir=runs/plain18
  python train.py --config=configs/resnet_imagenet.py:50,B,large_batch --workdir=runs/r50_lb
  python evaluate.py --workdir=runs/r50 --crops=10

The argument is DEPTH (18, 34, 50, 101, 152, 200) then optionally the
shortcut option (A, B, C, D, or `plain` for none; default B) and
`large_batch`.

Published top-1 error with 10-crop testing (Tables 2-3): plain-18 27.94%,
plain-34 28.54%, ResNet-18 27.88%, ResNet-34 A 25.03%, B 24.52%, C 24.19%;
ResNet-50 22.85%, ResNet-101 21.75%, ResNet-152 21.43% (option B).
Recipe (Section 3.4): SGD with momentum 0.9, weight decay 1e-4, batch 256,
learning rate 0.1 divided by 10 when the error plateaus, for up to 600k
iterations (~120 epochs); here every 30 epochs for 90 epochs, the schedule of
the released fb.resnet.torch models and of He et al. 2016's appendix ("divided
by 10 at 30 and 60 epochs"). Scale augmentation [256, 480] with 224 crops,
flips, the AlexNet PCA colour augmentation (std 0.1), 10-crop testing.
`large_batch`: Goyal et al. 2017's linear scaling rule with 5 epochs of linear
warmup, at batch 1024, and a cosine decay (He et al. 2019, "Bag of Tricks")
instead of steps; set --config.train.batch_size for other batch sizes (the
rate follows 0.1 per 256).
Hardware: ResNet-50 about 8 V100-days (1 day on 8); on one H100 in bfloat16
about 2 days. ResNet-18 about a third of that, ResNet-152 about 3x.
"""

from resnet_jax import defaults

SHORTCUTS = {'A': 'A', 'B': 'B', 'C': 'C', 'D': 'D', 'plain': 'none'}


def get_config(arg: str = '50'):
  depth, *options = arg.split(',')
  large_batch = 'large_batch' in options
  shortcuts = [o for o in options if o != 'large_batch']
  if len(shortcuts) > 1 or any(o not in SHORTCUTS for o in shortcuts):
    raise ValueError(
      f'config argument {arg!r}: expected DEPTH[,A|B|C|D|plain][,large_batch] (e.g. 34,A)'
    )

  config = defaults.get_config()
  model = config.model
  model.depth = int(depth)
  model.stem = 'imagenet'
  model.width = 64
  model.shortcut = SHORTCUTS[shortcuts[0]] if shortcuts else 'B'
  model.variant = 'v1'
  model.dtype = 'bfloat16'

  data = config.data
  data.dataset = 'imagenet2012'
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.image_size = 224
  data.preprocess = 'imagenet'
  data.train_crop = 'scale'
  data.pca_lighting = 0.0 if large_batch else 0.1  # "the standard color augmentation in [21]"

  train = config.train
  train.batch_size = 1024 if large_batch else 256
  train.num_steps = 0
  train.num_epochs = 90.0
  train.log_every = 100
  train.eval_every = 25_000 if not large_batch else 6_250  # about 5 epochs
  train.checkpoint_every = 5_000 if not large_batch else 1_250  # about an epoch

  optim = config.optim
  optim.learning_rate = 0.1  # per 256 images (linear scaling rule)
  if large_batch:
    optim.schedule = 'cosine'
    optim.warmup = 'linear'
    optim.warmup_epochs = 5.0
  else:
    optim.schedule = 'piecewise'
    optim.boundaries = (30, 60)
    optim.boundaries_unit = 'epochs'
  return config
