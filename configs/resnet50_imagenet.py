"""ResNet-50 on ImageNet, He et al. 2015 ("Deep Residual Learning", Table 3, option B).

  python train.py --config=configs/resnet50_imagenet.py --workdir=runs/r50
  python evaluate.py --workdir=runs/r50 --crops=10

Expected: 22.85% top-1 / 6.71% top-5 error with 10-crop testing (Table 3,
ResNet-50); about 76.1% single center-crop top-1 for the v1.5 variant
(torchvision's published ResNet-50 weights). The recipe, the other depths and
the large-batch option are in configs/resnet_imagenet.py.
Hardware: about 8 V100-days (1 day on 8 GPUs); on one H100 in bfloat16 about
2 days.
"""

from configs import resnet_imagenet


def get_config():
  return resnet_imagenet.get_config('50')
