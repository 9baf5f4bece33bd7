"""ResNet-20 on CIFAR-10, He et al. 2015 ("Deep Residual Learning", Section 4.2, Table 6).

  python train.py --config=configs/resnet20_cifar10.py --workdir=runs/r20

Expected: 8.75% test error (Table 6). The recipe and the other depths are in
configs/resnet_cifar10.py (`--config=configs/resnet_cifar10.py:56`).
Hardware: about 20 minutes on one modern GPU; several hours on 2 CPU cores.
"""

from configs import resnet_cifar10


def get_config():
  return resnet_cifar10.get_config('20')
