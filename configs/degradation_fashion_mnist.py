"""The degradation experiment of He et al. 2015 (Figures 1, 4 and 6) at CPU scale, on
Fashion-MNIST: plain and residual CIFAR-style networks of two depths, one recipe.

  python -m resnet_jax.data.prepare fashion_mnist
  python -m resnet_jax.analysis.sweep --config=configs/degradation_fashion_mnist.py \
    --grid model.shortcut=none,A --grid model.depth=20,56 --panel_by=model.shortcut \
    --workdir=runs/degradation --out=docs/results/degradation_fashion_mnist

The argument is DEPTH (6n+2), optionally `,plain` (the plain network of that depth).
The paper's claim (He et al. 2015, Figures 1 and 6 on CIFAR-10, no table entry): the
deeper plain network ends with a higher *training* error than the shallower one, the
deeper ResNet does not. Measured (2026-11-30, 2 shared CPU cores, 1 h 26 min for all
four; docs/results/degradation_fashion_mnist.md): training / test error plain-20
10.94 / 10.26%, plain-56 21.13 / 19.64%, ResNet-20 10.36 / 10.52%, ResNet-56 12.11 /
11.91%: plain degrades by 10 points; the deeper ResNet comes within 1.75 points of the
shallower one but, in three epochs, does not pass it. On the first 10,000 training
images for 18 epochs (same 1,404 steps; `--grid 'data.train_split=train[:10000]' --grid
train.num_epochs=18`; docs/results/degradation_fashion_mnist_10k.md): 9.31 / 22.46%
plain, 8.39 / 9.57% ResNet-20 / 56 training error: the same picture. With three seeds each
(`--grid seed=0,1,2`; docs/results/degradation_fashion_mnist_seeds.md), training error
plain-20 11.12 ± 0.30, plain-56 21.27 ± 0.22, ResNet-20 10.62 ± 0.23, ResNet-56
11.56 ± 0.75%: plain's degradation is ~40 times the seeds' spread; the ResNets' 0.94-point
gap is within it.
Recipe: configs/resnet20_fashion_mnist.py's (SGD 0.1 at batch 128, momentum 0.9, weight
decay 1e-4, 50-step warmup, cosine decay), three epochs (1,404 steps) so that all four
networks fit in about 1.5 hours on 2 CPU cores; the training error is logged every 25
steps, the test error every 234.
Hardware: on one modern GPU all four runs take a few minutes.
"""

from configs import resnet20_fashion_mnist


def get_config(arg: str = '20'):
  depth, *rest = arg.split(',')
  if rest not in ([], ['plain']):
    raise ValueError(f"config argument {arg!r}: expected DEPTH or DEPTH,plain (e.g. '56,plain')")
  config = resnet20_fashion_mnist.get_config()
  config.model.depth = int(depth)
  config.model.shortcut = 'none' if rest == ['plain'] else 'A'
  config.train.num_epochs = 3.0  # 1,406 steps
  config.train.log_every = 25
  config.train.eval_every = 234  # six points of the test-error curve
  config.train.checkpoint_every = 234
  return config
