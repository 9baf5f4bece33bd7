"""What `config.pretrained` does to a freshly initialized network before training starts."""

import ml_collections

from resnet_jax.models import NetworkSpec, ResNet
from resnet_jax.pretrained import assign, files, layouts


def check_config(
  pretrained_config: ml_collections.ConfigDict, spec: NetworkSpec, *, load_weights: bool = True
) -> None:
  """A ConfigError for a `config.pretrained` that cannot load into the network `spec`
  describes (an unknown source, a network of another structure, a missing file unless
  `load_weights` is False); that the file holds this network is checked as it loads."""
  layouts.check_source(pretrained_config.source)
  if pretrained_config.weights:
    layouts.check_representable(spec)
    if load_weights:
      files.check_path(pretrained_config.weights)


def prepare(
  model: ResNet,
  pretrained_config: ml_collections.ConfigDict,
  *,
  frozen_backbone: bool,
  load_weights: bool = True,
) -> None:
  """Loads `pretrained.weights` into `model` in place, and freezes its BatchNorms.

  Every parameter and BN statistic comes from the file, the classifier too
  with `pretrained.load_head` (it needs the file's number of classes); without
  it the head keeps its fresh initialization. A frozen backbone
  (`optim.backbone_lr_scale=0`) is a fixed function in training as in eval:
  its BatchNorms normalize with their running statistics and leave them
  unchanged, instead of using and updating batch statistics.
  `load_weights=False` skips the file, for a state that a checkpoint replaces.
  """
  if pretrained_config.weights and load_weights:
    assign(
      model,
      files.read(pretrained_config.weights),
      source=pretrained_config.source,
      path=pretrained_config.weights,
      head=pretrained_config.load_head,
    )
  if frozen_backbone:
    model.eval()  # The head has no BatchNorm: this freezes exactly the backbone's.
