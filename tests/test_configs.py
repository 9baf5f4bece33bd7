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


@pytest.mark.parametrize(
  'name, arg', [('resnet50_imagenet_tv2', None), ('resnet50_rsb', 'A1'), ('resnet50_rsb', 'A2'),
                ('resnet50_rsb', 'A3')],
)  # fmt: skip
def test_recipe_configs_pass_check_config(name, arg):
  from resnet_jax import experiment, parallel

  module = importlib.import_module(f'configs.{name}')
  config = module.get_config() if arg is None else module.get_config(arg)
  experiment.check_config(config, parallel.create_mesh())


def test_torchvision_v2_recipe_says_what_torchvision_says():
  from configs import resnet50_imagenet_tv2

  config = resnet50_imagenet_tv2.get_config()
  assert config.train.batch_size == 1024 and config.train.num_epochs == 600  # 8 x 128
  assert optim.scaled_learning_rate(config.optim, 1024) == pytest.approx(0.5)  # --lr 0.5
  steps_per_epoch = 1_281_167 // 1024
  total = 600 * steps_per_epoch
  schedule = optim.create_learning_rate_schedule(
    config.optim, batch_size=1024, steps_per_epoch=steps_per_epoch, total_steps=total
  )
  assert float(schedule(0)) == pytest.approx(0.005)  # lr_warmup_decay 0.01 x 0.5
  assert float(schedule(5 * steps_per_epoch)) == pytest.approx(0.5, rel=1e-4)
  assert float(schedule(total)) == pytest.approx(0.0, abs=1e-6)
  assert (config.optim.optimizer, config.optim.momentum, config.optim.weight_decay) == (
    'sgd', 0.9, 2e-5,
  )  # fmt: skip
  assert not config.optim.decay_bn_and_bias and config.optim.label_smoothing == 0.1
  # EMA every 32 steps; decay 0.99998 adjusted as train.py does: 1 - 2e-5 * 8 * 128 * 32 / 600
  assert config.optim.ema_every == 32
  assert config.optim.ema_decay == pytest.approx(1 - 2e-5 * 8 * 128 * 32 / 600)
  assert config.optim.ema_decay == pytest.approx(0.99890773, abs=1e-8)
  data = config.data
  assert (data.image_size, data.eval_image_size, data.eval_resize) == (176, 224, 232)
  assert (data.train_crop, data.augment, data.random_erasing) == (
    'inception',
    'trivialaugment',
    0.1,
  )
  assert (data.mixup_alpha, data.cutmix_alpha, data.mix_switch_prob) == (0.2, 1.0, 0.5)
  model = config.model
  assert (model.variant, model.bn_group_size, model.zero_init_residual) == ('v1.5', 128, False)
  assert network_spec(model, platform='cpu').unit.block == 'bottleneck'


@pytest.mark.parametrize(
  'arg, epochs, size, lr, wd, drop_path, magnitude, mixup',
  [('A1', 600, 224, 5e-3, 0.01, 0.05, 21, 0.2), ('A2', 300, 224, 5e-3, 0.02, 0.05, 21, 0.1),
   ('A3', 100, 160, 8e-3, 0.02, 0.0, 18, 0.1)],
)  # fmt: skip
def test_rsb_procedures_follow_the_paper(arg, epochs, size, lr, wd, drop_path, magnitude, mixup):
  from configs import resnet50_rsb

  config = resnet50_rsb.get_config(arg)
  assert config.train.batch_size == 2048 and config.train.num_epochs == epochs
  assert optim.scaled_learning_rate(config.optim, 2048) == pytest.approx(lr)  # LAMB at 2048
  assert (config.optim.optimizer, config.optim.loss, config.optim.schedule) == (
    'lamb', 'bce', 'cosine',
  )  # fmt: skip
  assert config.optim.weight_decay == wd and config.optim.warmup_epochs == 5
  assert config.optim.adam_eps == 1e-6 and config.optim.ema_decay == 0.0
  assert config.model.drop_path_rate == drop_path
  data = config.data
  assert (data.image_size, data.eval_image_size, data.eval_resize) == (size, 224, 235)
  assert (data.augment, data.randaugment_ops, data.randaugment_magnitude) == (
    'randaugment', 2, magnitude,
  )  # fmt: skip
  assert (data.mixup_alpha, data.cutmix_alpha, data.random_erasing) == (mixup, 1.0, 0.0)
  steps_per_epoch = 1_281_167 // 2048
  total = epochs * steps_per_epoch
  schedule = optim.create_learning_rate_schedule(
    config.optim, batch_size=2048, steps_per_epoch=steps_per_epoch, total_steps=total
  )
  assert float(schedule(5 * steps_per_epoch)) == pytest.approx(lr, rel=1e-4)
  assert float(schedule(0)) == pytest.approx(1e-6, rel=1e-3)  # timm's --warmup-lr 1e-6


def test_rsb_argument_through_config_flags_and_a_bad_one():
  from absl import flags
  from ml_collections import config_flags

  from configs import resnet50_rsb

  path = Path(__file__).parents[1] / 'configs' / 'resnet50_rsb.py'
  for arg, epochs in (('', 600), (':A2', 300), (':A3', 100)):
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=flag_values)
    flag_values(['train.py', f'--config={path}{arg}'])
    assert flag_values.config.train.num_epochs == epochs
  with pytest.raises(ValueError, match=r'A1\|A2\|A3'):
    resnet50_rsb.get_config('A4')
