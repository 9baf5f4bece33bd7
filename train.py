"""Trains (or resumes) a residual network: resnet_jax/commands/train.py, from the checkout.

python train.py --config=configs/resnet20_fashion_mnist.py --workdir=runs/default
"""

from resnet_jax.commands import train

if __name__ == '__main__':
  train.run()
