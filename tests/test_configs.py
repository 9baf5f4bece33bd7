"""Every config in configs/ loads, builds its network, and says what the paper says."""

import importlib
from pathlib import Path

import pytest

from resnet_jax import optim
from resnet_jax.models import network_spec

CONFIG_FILES = sorted(p.stem for p in (Path(__file__).parents[1] / 'configs').glob('*.py'))


@pytest.mark.parametrize('name', [n for n in CONFIG_FILES if n != '__init__'])
def test_config_loads_and_describes_a_valid_network(name):
  module = importlib.import_module(f'configs.{name}')
  assert module.__doc__ and 'python ' in module.__doc__  # the command that runs it
  network_spec(module.get_config().model, platform='cpu')


@pytest.mark.parametrize('depth', [20, 32, 44, 56, 110, 1202])
def test_cifar_configs_follow_the_paper(depth):
  from configs import resnet_cifar10

  config = resnet_cifar10.get_config(str(depth))
  assert network_spec(config.model, platform='cpu').units_per_stage == ((depth - 2) // 6,) * 3
  assert config.model.shortcut == 'A' and config.train.num_steps == 64_000
  schedule = optim.create_learning_rate_schedule(
    config.optim, batch_size=128, steps_per_epoch=390, total_steps=64_000
  )
  warmed_up = depth >= 110
  assert float(schedule(0)) == pytest.approx(0.01 if warmed_up else 0.1)
  assert float(schedule(399)) == pytest.approx(0.01 if warmed_up else 0.1)
  assert float(schedule(400)) == pytest.approx(0.1)
  assert float(schedule(32_000)) == pytest.approx(0.01)
  assert float(schedule(48_000)) == pytest.approx(0.001)


def test_cifar_plain_argument_removes_the_shortcuts():
  from configs import resnet_cifar10

  assert resnet_cifar10.get_config('56,plain').model.shortcut == 'none'
  with pytest.raises(ValueError, match='DEPTH or DEPTH,plain'):
    resnet_cifar10.get_config('56,B')


def test_cifar_45k_argument_holds_out_the_paper_validation_split():
  from configs import resnet_cifar10

  data = resnet_cifar10.get_config('56,plain,45k').data
  assert (data.train_split, data.eval_split) == ('train[:45000]', 'train[45000:]')
  assert resnet_cifar10.get_config('56').data.eval_split == 'test'


@pytest.mark.parametrize(
  'arg, shortcut, block',
  [('18', 'B', 'basic'), ('34,A', 'A', 'basic'), ('18,plain', 'none', 'basic'),
   ('50', 'B', 'bottleneck'), ('152,C', 'C', 'bottleneck')],
)  # fmt: skip
def test_imagenet_configs_by_depth_and_shortcut(arg, shortcut, block):
  from configs import resnet_imagenet

  config = resnet_imagenet.get_config(arg)
  assert config.model.shortcut == shortcut
  assert network_spec(config.model, platform='cpu').unit.block == block
  assert config.optim.boundaries_unit == 'epochs' and tuple(config.optim.boundaries) == (30, 60)


def test_imagenet_large_batch_option_warms_up_then_cosine():
  from configs import resnet_imagenet

  config = resnet_imagenet.get_config('50,large_batch')
  steps_per_epoch = 1_281_167 // config.train.batch_size
  total = 90 * steps_per_epoch
  schedule = optim.create_learning_rate_schedule(
    config.optim, batch_size=config.train.batch_size, steps_per_epoch=steps_per_epoch,
    total_steps=total,
  )  # fmt: skip
  peak = 0.1 * config.train.batch_size / 256
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5 * steps_per_epoch)) == pytest.approx(peak, rel=1e-3)
  assert float(schedule(total)) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match='DEPTH'):
    resnet_imagenet.get_config('50,E')


@pytest.mark.parametrize(
  'arg, block, units, fields',
  [
    ('original', 'basic', 18, dict(shortcut='A', variant='v1', gate='off')),
    ('exclusive', 'basic', 18, dict(gate='exclusive', gate_bias=-6.0)),
    ('conv_shortcut', 'basic', 18, dict(shortcut='C')),
    ('relu_preact', 'basic', 18, dict(variant='relu_preact')),
    ('preact,164', 'bottleneck', 18, dict(variant='preact', shortcut='B')),
    ('bn_after_add,1001', 'bottleneck', 111, dict(variant='bn_after_add', shortcut='B')),
    ('dropout', 'basic', 18, dict(gate='dropout', shortcut='A')),
    ('preact,one_layer', 'one_layer', 36, dict(variant='preact', depth=110)),
  ],
)
def test_identity_mappings_configs(arg, block, units, fields):
  from configs import identity_mappings_cifar10

  config = identity_mappings_cifar10.get_config(arg)
  spec = network_spec(config.model, platform='cpu')
  assert (spec.unit.block, spec.units_per_stage) == (block, (units,) * 3)
  assert {k: config.model[k] for k in fields} == fields
  assert config.optim.warmup_steps == 400 and config.train.num_steps == 64_000
  with pytest.raises(ValueError, match='VARIANT'):
    identity_mappings_cifar10.get_config('dropout_shortcut')
