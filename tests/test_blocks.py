"""Residual units and shortcuts: options A-D and none, v1/v1.5/preact, zero init, and
Identity Mappings' gates and activation placements."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resnet_jax.models.blocks import (
  ProjectionShortcut,
  ResidualUnit,
  UnitOptions,
  ZeroPadShortcut,
  branch_layout,
  make_shortcut,
)
from resnet_jax.models.summary import count_params


def _options(**overrides) -> UnitOptions:
  fields = dict(
    block='basic',
    variant='v1',
    shortcut='B',
    zero_init_residual=False,
    bn_group_size=0,
    dtype=jnp.float32,
  )
  return UnitOptions(**{**fields, **overrides})


def _x(shape=(4, 8, 8, 16), seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def test_option_a_subsamples_and_zero_pads_without_parameters():
  shortcut = ZeroPadShortcut(16, 32, stride=2)
  x = _x()
  y = shortcut(x)
  assert y.shape == (4, 4, 4, 32)
  np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(y[..., 16:], 0)
  assert count_params(shortcut) == 0


def test_option_a_cannot_reduce_channels():
  with pytest.raises(ValueError, match='cannot reduce 32 to 16'):
    ZeroPadShortcut(32, 16, stride=1)


@pytest.mark.parametrize(
  'kind, reshapes, expected',
  [
    ('A', False, None), ('A', True, ZeroPadShortcut),
    ('B', False, None), ('B', True, ProjectionShortcut),
    ('C', False, ProjectionShortcut), ('C', True, ProjectionShortcut),
    ('D', False, None), ('D', True, ProjectionShortcut),
    ('none', False, None), ('none', True, None),
  ],
)  # fmt: skip
def test_which_units_get_which_shortcut(kind, reshapes, expected):
  stride, out_channels = (2, 32) if reshapes else (1, 16)
  shortcut = make_shortcut(16, out_channels, stride, _options(shortcut=kind), nnx.Rngs(0))
  assert (None if shortcut is None else type(shortcut)) is expected


def test_option_d_average_pools_before_a_stride_1_projection():
  shortcut = make_shortcut(16, 32, 2, _options(shortcut='D'), nnx.Rngs(0))
  assert shortcut.conv.strides == 1
  x = _x()
  pooled = x.reshape(4, 4, 2, 4, 2, 16).mean(axis=(2, 4))
  expected = shortcut.norm(shortcut.conv(pooled))
  np.testing.assert_allclose(shortcut(x), expected, atol=1e-5)


def test_option_b_projection_strides_the_1x1():
  shortcut = make_shortcut(16, 32, 2, _options(shortcut='B'), nnx.Rngs(0))
  assert shortcut.conv.strides == 2 and shortcut.pool_stride == 1


def test_preact_projection_has_no_norm_of_its_own():
  shortcut = make_shortcut(16, 32, 2, _options(shortcut='B', variant='preact'), nnx.Rngs(0))
  assert shortcut.norm is None


@pytest.mark.parametrize('variant, strided_conv', [('v1', 0), ('v1.5', 1), ('preact', 1)])
def test_bottleneck_stride_placement(variant, strided_conv):
  layout = branch_layout('bottleneck', variant, 256, 512, 2)
  assert [k for _, _, k, _ in layout] == [1, 3, 1]
  assert [s for _, _, _, s in layout] == [2 if i == strided_conv else 1 for i in range(3)]
  assert [c_out for _, c_out, _, _ in layout] == [128, 128, 512]


@pytest.mark.parametrize('variant', ['v1', 'preact'])
@pytest.mark.parametrize('block', ['basic', 'bottleneck'])
def test_zero_init_residual_makes_the_unit_start_as_its_shortcut(variant, block):
  options = _options(block=block, variant=variant, zero_init_residual=True)
  unit = ResidualUnit(16, 16, 1, options, rngs=nnx.Rngs(0))
  x = _x()
  expected = x if variant == 'preact' else jax.nn.relu(x)
  np.testing.assert_allclose(unit(x), expected, atol=1e-6)


def test_without_zero_init_the_branch_contributes():
  unit = ResidualUnit(16, 16, 1, _options(), rngs=nnx.Rngs(0))
  x = _x()
  assert not np.allclose(unit(x), jax.nn.relu(x), atol=1e-3)


def test_plain_unit_is_the_residual_unit_without_its_identity():
  # Pre-activation units end in the addition, so plain and residual outputs of
  # the same weights differ by exactly the input.
  x = _x()
  residual = ResidualUnit(16, 16, 1, _options(variant='preact'), rngs=nnx.Rngs(0))
  plain = ResidualUnit(16, 16, 1, _options(variant='preact', shortcut='none'), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(residual(x), plain(x) + x, atol=1e-5)


def test_post_activation_plain_unit_applies_relu_to_the_branch_only():
  x = _x()
  plain = ResidualUnit(16, 16, 1, _options(shortcut='none'), rngs=nnx.Rngs(0))
  residual = ResidualUnit(16, 16, 1, _options(shortcut='B'), rngs=nnx.Rngs(0))
  branch = plain.norms[1](plain.convs[1](jax.nn.relu(plain.norms[0](plain.convs[0](x)))))
  np.testing.assert_allclose(plain(x), jax.nn.relu(branch), atol=1e-5)
  np.testing.assert_allclose(residual(x), jax.nn.relu(branch + x), atol=1e-5)


@pytest.mark.parametrize('kind', ['A', 'B', 'C', 'D', 'none'])
@pytest.mark.parametrize('variant', ['v1', 'v1.5', 'preact'])
def test_downsampling_bottleneck_shapes(kind, variant):
  options = _options(block='bottleneck', variant=variant, shortcut=kind)
  unit = ResidualUnit(64, 128, 2, options, rngs=nnx.Rngs(0))
  assert unit(_x((2, 8, 8, 64))).shape == (2, 4, 4, 128)


def test_he_fan_out_initialization():
  unit = ResidualUnit(64, 64, 1, _options(), rngs=nnx.Rngs(0))
  kernel = np.asarray(unit.convs[0].kernel[...])  # 3x3x64x64, fan-out 3*3*64
  np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (9 * 64)), rtol=0.03)
  assert abs(kernel.mean()) < 0.01


@pytest.mark.parametrize('variant', ['v1', 'v1.5', 'preact'])
def test_bottleneck_with_einsum_1x1_has_the_same_state_and_outputs(variant):
  def unit(einsum):
    options = _options(block='bottleneck', variant=variant, shortcut='B', pointwise_einsum=einsum)
    return ResidualUnit(32, 64, 2, options, rngs=nnx.Rngs(0))

  plain, fast = unit(False), unit(True)
  plain_state, fast_state = nnx.state(plain), nnx.state(fast)
  assert jax.tree.structure(plain_state) == jax.tree.structure(fast_state)  # checkpoints swap
  jax.tree.map(np.testing.assert_array_equal, plain_state, fast_state)
  x = _x((4, 8, 8, 32))
  np.testing.assert_allclose(fast(x), plain(x), atol=1e-5)


# Identity Mappings (He et al. 2016) Table 1 gates and Table 2 activation placements.


def test_gates_add_a_biased_1x1_conv_per_unit_and_constant_scaling_nothing():
  ungated = count_params(ResidualUnit(16, 32, 2, _options(shortcut='A'), rngs=nnx.Rngs(0)))
  for gate, extra in [
    ('constant', 0),
    ('exclusive', 16 * 32 + 32),
    ('shortcut_only', 16 * 32 + 32),
  ]:
    unit = ResidualUnit(16, 32, 2, _options(shortcut='A', gate=gate), rngs=nnx.Rngs(0))
    assert count_params(unit) == ungated + extra, gate
    assert unit(_x()).shape == (4, 4, 4, 32)


@pytest.mark.parametrize('variant', ['v1', 'preact'])
def test_gate_numerics(variant):
  x = _x()
  plain_sum = ResidualUnit(16, 16, 1, _options(shortcut='A', variant=variant), rngs=nnx.Rngs(0))
  expected = plain_sum(x)
  after_add = jax.nn.relu if variant == 'v1' else (lambda y: y)

  def unit(gate, bias=0.0):
    options = _options(shortcut='A', variant=variant, gate=gate, gate_bias=bias)
    return ResidualUnit(16, 16, 1, options, rngs=nnx.Rngs(0))

  # constant scaling: 0.5 h + 0.5 F, i.e. half of h + F before the (positively homogeneous) ReLU
  np.testing.assert_allclose(unit('constant')(x), 0.5 * expected, rtol=1e-5, atol=1e-6)
  # a gate biased far negative is closed: g ~ 0
  np.testing.assert_allclose(unit('shortcut_only', -30.0)(x), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(unit('exclusive', -30.0)(x), after_add(x), rtol=1e-5, atol=1e-5)
  # bias 0 and a zero gate kernel: g = 0.5 exactly, so exclusive gating is constant scaling
  half = unit('exclusive')
  half.gate.conv.kernel.set_value(jnp.zeros_like(half.gate.conv.kernel.get_value()))
  np.testing.assert_allclose(half(x), 0.5 * expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('variant', ['bn_after_add', 'relu_before_add', 'relu_preact'])
def test_table2_units_match_their_definition(variant):
  unit = ResidualUnit(16, 16, 1, _options(shortcut='A', variant=variant), rngs=nnx.Rngs(0))
  v1 = ResidualUnit(16, 16, 1, _options(shortcut='A'), rngs=nnx.Rngs(0))
  assert count_params(unit) == count_params(v1)  # the same components, reordered
  x = _x()
  (c1, c2), (n1, n2) = unit.convs, unit.norms
  relu = jax.nn.relu
  expected = {
    'bn_after_add': lambda: relu(n2(c2(relu(n1(c1(x)))) + x)),
    'relu_before_add': lambda: x + relu(n2(c2(relu(n1(c1(x)))))),
    'relu_preact': lambda: x + n2(c2(relu(n1(c1(relu(x)))))),
  }[variant]()
  np.testing.assert_allclose(unit(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('variant', ['bn_after_add', 'relu_before_add', 'relu_preact'])
def test_table2_bottlenecks_stride_the_first_1x1_like_v1(variant):
  layout = branch_layout('bottleneck', variant, 256, 512, 2)
  assert [s for _, _, _, s in layout] == [2, 1, 1]


def test_dropout_shortcut_keeps_half_of_h_in_training_and_scales_it_by_half_in_eval():
  options = _options(shortcut='A', variant='relu_before_add', gate='dropout')
  unit = ResidualUnit(16, 16, 1, options, rngs=nnx.Rngs(0))
  assert count_params(unit) == count_params(ResidualUnit(16, 16, 1, _options(), rngs=nnx.Rngs(0)))
  x = _x((8, 8, 8, 16))
  (c1, c2), (n1, n2) = unit.convs, unit.norms
  branch = jax.nn.relu(n2(c2(jax.nn.relu(n1(c1(x))))))  # no ReLU after the addition
  key = jax.random.key(3)
  kept = np.asarray(unit(x, key) - branch)
  np.testing.assert_array_equal(unit(x, key), unit(x, key))  # the key decides the mask
  assert not np.allclose(unit(x, jax.random.key(4)), unit(x, key))
  on, off = np.isclose(kept, np.asarray(x), atol=1e-5), np.abs(kept) < 1e-5
  assert np.all(on | off)  # each element of h is kept whole or dropped
  assert 0.45 < on[np.abs(np.asarray(x)) > 1e-3].mean() < 0.55  # of ~8,000 elements
  with pytest.raises(ValueError, match='key='):
    unit(x)
  unit.eval()
  np.testing.assert_allclose(unit(x), 0.5 * x + n2(c2(jax.nn.relu(n1(c1(x))))).clip(0), atol=1e-5)


@pytest.mark.parametrize('variant', ['v1', 'preact'])
def test_one_layer_units_have_a_single_3x3_convolution(variant):
  assert branch_layout('one_layer', variant, 16, 32, 2) == [(16, 32, 3, 2)]
  unit = ResidualUnit(16, 16, 1, _options(block='one_layer', variant=variant), rngs=nnx.Rngs(0))
  (conv,), (norm,) = unit.convs, unit.norms
  x = _x()
  expected = jax.nn.relu(norm(conv(x)) + x) if variant == 'v1' else conv(jax.nn.relu(norm(x))) + x
  np.testing.assert_allclose(unit(x), expected, rtol=1e-5, atol=1e-5)
