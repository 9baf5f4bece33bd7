"""resnet_jax.data.splits: TFDS's split syntax, resolved without TFDS as TFDS resolves it."""

import types

import pytest
import tensorflow_datasets as tfds

from resnet_jax.data import splits
from resnet_jax.errors import ConfigError

SIZES = {'train': 60_000, 'test': 10_000, 'validation': 7}


def _tfds_slices(split: str) -> list[tuple[str, int, int]]:
  infos = {k: types.SimpleNamespace(num_examples=n) for k, n in SIZES.items()}
  return [
    (i.splitname, i.from_ or 0, SIZES[i.splitname] if i.to is None else i.to)
    for i in tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
  ]


@pytest.mark.parametrize(
  'split',
  [
    'train',
    'train[:45000]',
    'train[45000:]',
    'train[10:20]+test[:2]',
    'train[:45000] + validation',
    'train[90%:]',
    'train[:33.3%]',
    'train[-10%:]',
    'train[:-100]',
    'test[-5:]',
    'validation[:50%]',  # 3.5 examples: rounded as TFDS rounds (to even)
    'validation[10%:90%]',
    'validation[:15%]',
    'train[0:60000]',
  ],
)
def test_slices_resolve_as_tfds_resolves_them(split):
  assert splits.slices(split, SIZES) == _tfds_slices(split)


@pytest.mark.parametrize(
  'split',
  ['tset', 'train[:60001]', 'train[-60001:]', 'train[1:2:3]', 'train[10%:100]', 'train[x:]', ''],
)
def test_unknown_or_malformed_splits_are_one_line(split):
  with pytest.raises(ConfigError, match=r'unknown or malformed split .*: the splits are \['):
    splits.slices(split, SIZES)


def test_a_slice_that_selects_nothing_says_so():
  with pytest.raises(ConfigError, match=r"'train\[20:10\]' selects no examples"):
    splits.slices('train[20:10]', SIZES)


def test_nonempty_slices_refuse_a_string_that_selects_nothing():
  assert splits.nonempty_slices('mnist', 'train[5:6]+test[3:3]', SIZES) == [
    ('train', 5, 6),
    ('test', 3, 3),
  ]
  with pytest.raises(ConfigError, match=r"^split 'train\[5:5\]\+test\[:0%\]' of mnist is empty$"):
    splits.nonempty_slices('mnist', 'train[5:5]+test[:0%]', SIZES)
