"""Shared test helpers."""

import pytest

from configs import default


@pytest.fixture
def model_config():
  """`config.model` from configs/default.py (CIFAR ResNet-20, option A), unlocked copy."""
  return default.get_config().model
