"""Flax NNX residual networks: `create_model(config.model, num_classes=..., rngs=...)`."""

from resnet_jax.models.blocks import ProjectionShortcut, ResidualUnit, ZeroPadShortcut
from resnet_jax.models.norm import GroupBatchNorm
from resnet_jax.models.resnet import (
  EXECUTION_FIELDS,
  IMAGENET_DEPTHS,
  NetworkSpec,
  ResNet,
  create_model,
  network_spec,
)

__all__ = [
  'EXECUTION_FIELDS',
  'IMAGENET_DEPTHS',
  'GroupBatchNorm',
  'NetworkSpec',
  'ProjectionShortcut',
  'ResNet',
  'ResidualUnit',
  'ZeroPadShortcut',
  'create_model',
  'network_spec',
]
