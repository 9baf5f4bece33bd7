"""The training and evaluation commands, importable from an installed package.

  python -m resnet_jax.commands.train --config=my_config.py --workdir=runs/mine
  python -m resnet_jax.commands.evaluate --workdir=runs/mine

(installed as `resnet-jax-train` and `resnet-jax-evaluate`; in a checkout,
`python train.py` and `python evaluate.py` are the same commands). Each module
defines its flags in `define_flags`, called only when it runs as a program.
"""
