"""Shared test helpers."""

import pytest

from configs import default


@pytest.fixture
def model_config():
  """`config.model` from configs/default.py (CIFAR ResNet-20, option A), unlocked copy."""
  return default.get_config().model


def override(model_config, **fields):
  for name, value in fields.items():
    setattr(model_config, name, value)
  return model_config
