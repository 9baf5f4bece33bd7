"""Evaluates a checkpoint: resnet_jax/commands/evaluate.py, from the checkout.

python evaluate.py --workdir=runs/default [--step=N | --best] [--split=S] [--crops=1|10]
"""

from resnet_jax.commands import evaluate

if __name__ == '__main__':
  evaluate.run()
