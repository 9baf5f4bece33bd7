"""The ResNet model zoo: sizes against the papers, shapes, dtypes, errors, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from resnet_jax.models import GroupBatchNorm, create_model, network_spec
from resnet_jax.models.summary import count_params, summarize

IMAGENET = dict(stem='imagenet', width=64, shortcut='B')

# Parameters of torchvision's resnet18..152 (option B; v1 and v1.5 have the
# same weights), and timm's resnet200.
TORCHVISION_PARAMS = {
  18: 11_689_512,
  34: 21_797_672,
  50: 25_557_032,
  101: 44_549_160,
  152: 60_192_808,
  200: 64_673_832,
}
# He et al. 2015, Table 1: multiply-adds ("FLOPs") per 224x224 image, x1e9.
PAPER_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# He et al. 2015, Section 4.2 / Table 6: CIFAR parameters in millions, as printed.
PAPER_CIFAR_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def override(model_config, **fields):
  for name, value in fields.items():
    setattr(model_config, name, value)
  return model_config


def _model(model_config, num_classes=10, in_channels=3, seed=0, **fields):
  return create_model(
    override(model_config, **fields),
    num_classes=num_classes,
    in_channels=in_channels,
    rngs=nnx.Rngs(seed),
  )


def _rows(model_config, image_hwc, num_classes, **fields):
  model = _model(model_config, num_classes=num_classes, **fields)
  return model, summarize(model, image_hwc)


def _round_like(value: float, printed: float) -> float:
  """`value` rounded to as many decimals as the paper printed."""
  decimals = len(repr(printed).split('.')[1]) if '.' in repr(printed) else 0
  return round(value, decimals)


@pytest.mark.parametrize('depth', sorted(TORCHVISION_PARAMS))
def test_imagenet_parameters_match_torchvision_and_logits_shape(model_config, depth):
  model, rows = _rows(model_config, (224, 224, 3), 1000, depth=depth, **IMAGENET)
  assert count_params(model) == TORCHVISION_PARAMS[depth]
  assert sum(r.params for r in rows) == TORCHVISION_PARAMS[depth]
  assert [r.output_shape for r in rows][1:] == [
    (56, 56, model.spec.stage_channels[0]),
    (28, 28, model.spec.stage_channels[1]),
    (14, 14, model.spec.stage_channels[2]),
    (7, 7, model.spec.stage_channels[3]),
    (1000,),
  ]


@pytest.mark.parametrize('depth', sorted(PAPER_GMACS))
def test_imagenet_multiply_adds_match_table_1(model_config, depth):
  _, rows = _rows(model_config, (224, 224, 3), 1000, depth=depth, variant='v1', **IMAGENET)
  gmacs = sum(r.macs for r in rows) / 1e9
  # Table 1 prints two significant digits and truncates (3.66 -> 3.6, 3.86 -> 3.8).
  assert gmacs == pytest.approx(PAPER_GMACS[depth], rel=0.025)


def test_v1_5_moves_stride_and_costs_more_multiply_adds(model_config):
  _, v1 = _rows(model_config, (224, 224, 3), 1000, depth=50, variant='v1', **IMAGENET)
  _, v15 = _rows(model_config, (224, 224, 3), 1000, depth=50, variant='v1.5', **IMAGENET)
  assert sum(r.params for r in v1) == sum(r.params for r in v15)
  assert sum(r.macs for r in v1) == 3_857_973_248  # ~4.1 GMACs is torchvision's v1.5
  assert sum(r.macs for r in v15) == 4_089_184_256


def _cifar_macs(n: int, num_classes: int = 10) -> int:
  """Multiply-adds of a 6n+2 CIFAR net with option A, from the paper's Section 4.2."""
  stem = 32 * 32 * 16 * 3 * 9
  per_stage_layer = 32 * 32 * 16 * 16 * 9  # the same at every stage: half size, double width
  first_of_downsampling_stage = per_stage_layer // 2  # its input has half the channels
  macs = stem + 2 * n * per_stage_layer
  macs += 2 * (first_of_downsampling_stage + (2 * n - 1) * per_stage_layer)
  return macs + 64 * num_classes


@pytest.mark.parametrize('depth', sorted(PAPER_CIFAR_PARAMS_M))
def test_cifar_sizes_match_the_paper(model_config, depth):
  model, rows = _rows(model_config, (32, 32, 3), 10, depth=depth)
  millions = count_params(model) / 1e6
  assert _round_like(millions, PAPER_CIFAR_PARAMS_M[depth]) == PAPER_CIFAR_PARAMS_M[depth]
  assert sum(r.macs for r in rows) == _cifar_macs((depth - 2) // 6)
  assert [r.output_shape for r in rows] == [
    (32, 32, 16),
    (32, 32, 16),
    (16, 16, 32),
    (8, 8, 64),
    (10,),
  ]


def test_resnet_1202(model_config):
  model, rows = _rows(model_config, (32, 32, 3), 10, depth=1202)
  assert round(count_params(model) / 1e6, 1) == 19.4  # Section 4.2
  assert sum(r.macs for r in rows) == _cifar_macs(200)
  assert rows[-1].output_shape == (10,)


@pytest.mark.parametrize('depth, paper_millions', [(164, 1.7), (1001, 10.2)])
def test_preact_bottleneck_networks_of_identity_mappings(model_config, depth, paper_millions):
  model, rows = _rows(
    model_config, (32, 32, 3), 10, depth=depth, block='bottleneck', variant='preact', shortcut='B'
  )
  assert model.spec.units_per_stage == ((depth - 2) // 9,) * 3
  assert model.spec.stage_channels == (64, 128, 256)
  weights = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  bn = sum(
    m.scale.size + m.bias.size for _, m in nnx.iter_modules(model) if isinstance(m, GroupBatchNorm)
  )
  assert round((weights - bn) / 1e6, 1) == paper_millions
  assert rows[-1].output_shape == (10,)


def test_one_layer_resnet_110_of_identity_mappings_table_3(model_config):
  model, rows = _rows(model_config, (32, 32, 3), 10, depth=110, block='one_layer')
  assert model.spec.units_per_stage == (36, 36, 36)  # 3n + 2 = 110
  assert round(count_params(model) / 1e6, 1) == 1.7  # Table 3
  assert rows[-1].output_shape == (10,)
  with pytest.raises(ValueError, match=r'depth 23 is a one_layer-unit depth: set model.block='):
    _model(model_config, depth=23, block='basic')


def _projection_params(channels_pairs) -> int:
  return sum(c_in * c_out + 2 * c_out for c_in, c_out in channels_pairs)  # 1x1 conv + BN


def test_option_a_has_the_parameters_of_the_plain_net(model_config):
  for fields in (dict(depth=34, **IMAGENET), dict(depth=56, stem='cifar', width=16)):
    residual = _model(model_config, **{**fields, 'shortcut': 'A'})
    plain = _model(model_config, **{**fields, 'shortcut': 'none'})
    assert count_params(residual) == count_params(plain)


def test_option_b_projects_only_where_shapes_change(model_config):
  a = count_params(_model(model_config, depth=34, **{**IMAGENET, 'shortcut': 'A'}))
  b = count_params(_model(model_config, depth=34, **IMAGENET))
  assert b - a == _projection_params([(64, 128), (128, 256), (256, 512)])


def test_option_c_projects_on_every_unit(model_config):
  b = count_params(_model(model_config, depth=34, **IMAGENET))
  c = count_params(_model(model_config, depth=34, **{**IMAGENET, 'shortcut': 'C'}))
  identity_units = [(64, 64)] * 3 + [(128, 128)] * 3 + [(256, 256)] * 5 + [(512, 512)] * 2
  assert c - b == _projection_params(identity_units)


def test_option_d_has_the_parameters_of_b(model_config):
  b = _model(model_config, depth=50, **IMAGENET)
  d = _model(model_config, depth=50, **{**IMAGENET, 'shortcut': 'D'})
  assert count_params(d) == count_params(b)


@pytest.mark.parametrize(
  'fields',
  [
    dict(depth=18, **IMAGENET),
    dict(depth=50, variant='v1.5', **IMAGENET),
    dict(depth=50, variant='preact', **IMAGENET),
    dict(depth=50, **{**IMAGENET, 'shortcut': 'D'}),
    dict(depth=20, shortcut='none'),
    dict(depth=20, variant='preact'),
    dict(depth=29, block='bottleneck', variant='preact', shortcut='B'),
  ],
)
def test_forward_pass_shapes_and_finite_logits(model_config, fields):
  size = 64 if fields.get('stem') == 'imagenet' else 32
  model = _model(model_config, num_classes=7, **fields)
  logits = model(jnp.ones((2, size, size, 3)))
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_fashion_mnist_shape_one_channel(model_config):
  model = _model(model_config, in_channels=1)
  assert model(jnp.ones((2, 28, 28, 1))).shape == (2, 10)


def test_features_are_the_stage_outputs_at_strides_4_to_32(model_config):
  model = _model(model_config, depth=18, **IMAGENET)
  features = model.features(jnp.ones((1, 128, 128, 3)))
  assert [f.shape for f in features] == [
    (1, 32, 32, 64),
    (1, 16, 16, 128),
    (1, 8, 8, 256),
    (1, 4, 4, 512),
  ]


def test_bfloat16_computes_in_bfloat16_with_float32_parameters(model_config):
  model = _model(model_config, dtype='bfloat16')
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype('float32')}
  assert model.features(jnp.ones((2, 32, 32, 3)))[-1].dtype == jnp.bfloat16
  assert model(jnp.ones((2, 32, 32, 3))).dtype == jnp.float32


@pytest.mark.parametrize(
  'fields, message',
  [
    (dict(depth=19, stem='imagenet'), 'ImageNet ResNet has depth 18, 34, 50, 101, 152, 200'),
    (dict(depth=21), r'6n\+2'),
    (dict(depth=1001), "set model.block='bottleneck'"),
    (dict(depth=21, block='bottleneck'), r'9n\+2'),
    (dict(depth=50, stem='imagenet', block='basic'), 'uses bottleneck units'),
    (dict(shortcut='E'), "'A', 'B', 'C', 'D', 'none'"),
    (dict(variant='v2'), "'v1', 'v1.5', 'preact'"),
    (dict(stem='vit'), "'imagenet', 'cifar'"),
    (dict(dtype='float16'), "'float32', 'bfloat16'"),
    (dict(width=0), 'positive integer'),
    (dict(shortcut='none', zero_init_residual=True), 'plain network'),
    (dict(gate='highway'), "'off', 'constant', 'exclusive', 'shortcut_only'"),
    (dict(shortcut='none', gate='exclusive'), 'a plain network has none'),
    (dict(variant='bn_after_add', zero_init_residual=True), 'BN after the addition'),
    (dict(drop_path_rate=1.0), r'model.drop_path_rate=1.0: expected 0 <= rate < 1'),
    (dict(drop_path_rate=-0.1), r'model.drop_path_rate=-0.1: expected 0 <= rate < 1'),
    (dict(shortcut='none', drop_path_rate=0.1), r"plain network \(shortcut='none'\) has only"),
  ],
)
def test_wrong_configs_are_clear_value_errors(model_config, fields, message):
  with pytest.raises(ValueError, match=message):
    network_spec(override(model_config, **fields), platform='cpu')


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('drop_path_rate', '0.1', r"model.drop_path_rate='0.1': expected 0 <= rate < 1"),
    ('drop_path_rate', True, r'model.drop_path_rate=True: expected'),
    ('bn_unbiased_var', 1, r'model.bn_unbiased_var=1: expected True or False'),
  ],
)
def test_wrong_types_in_a_plain_dict_are_clear_value_errors(model_config, field, value, message):
  """A ConfigDict refuses these itself; `network_spec` also takes a plain dict."""
  with pytest.raises(ValueError, match=message):
    network_spec({**model_config.to_dict(), field: value}, platform='cpu')


def test_unknown_model_field_is_an_error(model_config):
  model_config.unlock()
  model_config.dept = 34
  with pytest.raises(ValueError, match=r"unknown fields \['dept'\]"):
    network_spec(model_config, platform='cpu')


def test_164_is_basic_unless_bottleneck_is_asked_for(model_config):
  assert network_spec(override(model_config, depth=164), platform='cpu').units_per_stage == (
    27,
    27,
    27,
  )
  assert network_spec(
    override(model_config, block='bottleneck'), platform='cpu'
  ).units_per_stage == (18, 18, 18)


def _batch(n=16, size=16, classes=4, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (n, size, size, 3)), jax.random.randint(ky, (n,), 0, classes)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_the_residual_network_learns_a_tiny_batch(model_config, dtype):
  model = _model(model_config, num_classes=4, depth=8, dtype=dtype, bn_group_size=8)
  optimizer = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=nnx.Param)
  images, labels = _batch()

  @nnx.jit
  def step(model, optimizer):
    def loss_fn(model):
      logits = model(images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer)) for _ in range(15)]
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.5 * losses[0], losses


def test_train_and_eval_modes_differ_only_in_batchnorm(model_config):
  # The biased running variance: with momentum 0 it is exactly the batch's.
  model = _model(model_config, num_classes=4, depth=8, bn_unbiased_var=False)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, GroupBatchNorm):
      module.momentum = 0.0  # running averages become exactly this batch's statistics
  images, _ = _batch()
  model.eval()
  untrained_eval = model(images)
  model.train()
  train_logits = model(images)  # also stores every layer's batch statistics
  assert not np.allclose(untrained_eval, train_logits, atol=1e-3)
  model.eval()
  np.testing.assert_allclose(model(images), train_logits, rtol=1e-4, atol=1e-4)


def test_conv1x1_choice_keeps_parameters_and_multiply_adds(model_config):
  counts = {}
  for choice in ('conv', 'einsum'):
    model, rows = _rows(model_config, (64, 64, 3), 10, depth=50, conv1x1=choice, **IMAGENET)
    counts[choice] = (count_params(model), sum(r.macs for r in rows))
  assert counts['conv'] == counts['einsum']
  with pytest.raises(ValueError, match="'auto', 'einsum', 'conv'"):
    network_spec(override(model_config, conv1x1='matmul'), platform='cpu')


@pytest.mark.parametrize(
  'platform, conv1x1, einsum, explicit_grads',
  [
    ('cpu', 'auto', True, True),
    ('gpu', 'auto', False, False),
    ('tpu', 'auto', False, False),
    ('gpu', 'einsum', True, False),
    ('cpu', 'conv', False, True),
  ],
)
def test_the_platform_passed_in_picks_the_formulations(
  model_config, platform, conv1x1, einsum, explicit_grads
):
  """XLA:CPU's formulations follow the platform the caller names, not JAX's backend here."""
  unit = network_spec(override(model_config, conv1x1=conv1x1), platform=platform).unit
  assert (unit.pointwise_einsum, unit.explicit_conv_grads) == (einsum, explicit_grads)


def test_relu_only_preact_networks_end_with_the_extra_relu(model_config):
  model = _model(model_config, variant='relu_preact')
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  assert model.final_relu and float(model.features(x)[-1].min()) >= 0
  assert float(model.stage_outputs(x)[-1].min()) < 0  # the last unit's sum, before it
