"""ResNet-20 on CIFAR-10, He et al. 2015 ("Deep Residual Learning", Section 4.2, Table 6).

  python train.py --config=configs/resnet20_cifar10.py --workdir=runs/r20
  python train.py --config=configs/resnet20_cifar10.py --config.model.depth=56 --workdir=runs/r56

Expected: 8.75% test error (Table 6, ResNet-20; 6.97% for ResNet-56, 6.43%
for ResNet-110 best of 5). Recipe: option A shortcuts, batch 128, learning
rate 0.1 divided by 10 at 32k and 48k iterations, stop at 64k, weight decay
1e-4, momentum 0.9, 4-pixel padding with random 32x32 crops and flips, on the
full 50k training set (the paper's 45k/5k split: --config.data.train_split=
'train[:45000]' --config.data.eval_split='train[45000:]').
Hardware: about 20 minutes on one modern GPU; several hours on 2 CPU cores.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 20
  config.model.stem = 'cifar'
  config.model.shortcut = 'A'
  config.model.width = 16
  config.data.dataset = 'cifar10'
  config.data.image_size = 32
  config.data.preprocess = 'cifar'
  config.train.batch_size = 128
  config.train.num_steps = 64_000
  config.optim.learning_rate = 0.2  # per 256 images: 0.1 at batch 128
  config.optim.boundaries = (32_000, 48_000)
  return config
