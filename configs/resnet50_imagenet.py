"""ResNet-50 on ImageNet, He et al. 2015 ("Deep Residual Learning", Table 3, option B).

  python train.py --config=configs/resnet50_imagenet.py --workdir=runs/r50
  python evaluate.py --workdir=runs/r50 --crops=10

Expected: 22.85% top-1 / 6.71% top-5 error with 10-crop testing (Table 3,
ResNet-50); about 76.1% single center-crop top-1 for the v1.5 variant
(torchvision's published ResNet-50 weights). Recipe: SGD with momentum 0.9,
weight decay 1e-4, batch 256, learning rate 0.1 divided by 10 every 30
epochs, 90 epochs (the fb.resnet.torch schedule the paper's released models
follow); scale augmentation [256, 480] with 224 crops.
Hardware: about 8 GPU-days on V100-class GPUs (roughly 1 day on 8); on one
H100 in bfloat16, about 2 days.
"""

from configs import default


def get_config():
  config = default.get_config()
  model = config.model
  model.depth = 50
  model.stem = 'imagenet'
  model.shortcut = 'B'
  model.variant = 'v1'
  model.width = 64
  model.dtype = 'bfloat16'

  data = config.data
  data.dataset = 'imagenet2012'
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.image_size = 224
  data.preprocess = 'imagenet'

  train = config.train
  train.batch_size = 256
  train.num_steps = 0
  train.num_epochs = 90.0
  train.log_every = 100
  train.eval_every = 25_000  # about 5 epochs
  train.checkpoint_every = 5_000  # about an epoch

  optim = config.optim
  optim.learning_rate = 0.1  # per 256 images
  optim.boundaries = (30, 60)
  optim.boundaries_unit = 'epochs'
  return config
