"""Every configuration field with its default (resnet_jax/defaults.py), as a config file.

python -m resnet_jax.models --config=configs/default.py
python train.py --config=configs/default.py --config.model.depth=56 --workdir=runs/r56
"""

from resnet_jax.defaults import get_config

__all__ = ['get_config']
