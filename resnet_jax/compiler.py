"""How the train and eval steps compile on XLA:CPU: the choices `autotune` measures.

A choice is a set of XLA:CPU's YNNPACK library fusions (`xla`: XLA's own default;
`ynn-off`: none; `ynn:dot,reduce`: those kinds) and how 1x1 convolutions run
(`model.conv1x1`: einsum or conv). Which is fastest depends on the CPU, the
network and the dtype: the train step of ResNet-50 ran 1.4-1.6x faster with dot
fusions alone than with dots, elementwise chains and reductions, on an Intel Xeon
and an AMD EPYC (Zen 5) alike, while ResNet-20's was fastest with those fused too
(docs/benchmarks.md). So nothing here is fixed per step: `autotune` times the
candidates on the machine that runs them. Every candidate computes the same numbers
to float tolerance (tests/test_compiler.py). GPUs and TPUs get no options: XLA
autotunes their kernels itself.
"""

import dataclasses
import os

from resnet_jax.errors import ConfigError

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
YNN_KINDS = ('dot', 'eltwise', 'reduce')
AUTOTUNE = 'autotune'
# The fusion sets the autotuner measures, in the order it measures them.
FUSION_CANDIDATES = ('ynn:dot', 'ynn:dot,reduce', 'ynn:dot,eltwise,reduce', 'ynn-off', 'xla')


@dataclasses.dataclass(frozen=True)
class Choice:
  """How one step compiles on CPU: `fusions` (a name as in FUSION_CANDIDATES, or any
  `ynn:` subset of YNN_KINDS) and `conv1x1` (model.conv1x1's value for the step)."""

  fusions: str
  conv1x1: str

  def __str__(self) -> str:
    return f'{self.fusions}, 1x1 as {self.conv1x1}'

  def compiler_options(self) -> dict[str, str]:
    return fusion_options(self.fusions)


def fusion_options(fusions: str) -> dict[str, str]:
  """XLA's compiler options for a fusion set name; a ConfigError for one that is not."""
  if fusions == 'xla':
    return {}
  if fusions == 'ynn-off':
    return {YNN_FUSION_FLAG: ''}
  kinds = fusions.removeprefix('ynn:').split(',')
  if (
    not fusions.startswith('ynn:')
    or not set(kinds) <= set(YNN_KINDS)
    or len(set(kinds)) < len(kinds)
  ):
    raise ConfigError(
      f"train.cpu_options={fusions!r}: use {AUTOTUNE!r}, xla (XLA's default), ynn-off, or "
      f'ynn: and YNNPACK fusion kinds from {",".join(YNN_KINDS)}, e.g. ynn:dot,reduce'
    )
  return {YNN_FUSION_FLAG: ','.join(f'LIBRARY_FUSION_TYPE_{kind.upper()}' for kind in kinds)}


def check_config(cpu_options: str) -> None:
  if cpu_options != AUTOTUNE:
    fusion_options(cpu_options)


def xla_flags_choose_fusions() -> bool:
  """A user's own `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=...` wins over any choice."""
  return YNN_FUSION_FLAG in os.environ.get('XLA_FLAGS', '')


def candidates(conv1x1: str) -> list[Choice]:
  """The choices to measure for a model with `model.conv1x1 = conv1x1`: every fusion set with
  the CPU's 1x1 formulation (einsum, unless the config names one); then, where the config
  leaves it to `auto`, the other formulation is tried with the fastest of those
  (`autotune` does that second round)."""
  formulation = 'einsum' if conv1x1 == 'auto' else conv1x1
  return [Choice(fusions, formulation) for fusions in FUSION_CANDIDATES]


def fixed_choice(cpu_options: str, conv1x1: str, platform: str) -> Choice | None:
  """The choice when nothing is to be measured, with 1x1 as the config says: XLA's default
  off CPU or where XLA_FLAGS names the fusions, else the config's fusion set; None where
  the config asks to autotune on CPU."""
  if platform != 'cpu' or xla_flags_choose_fusions():
    return Choice('xla', conv1x1)
  return None if cpu_options == AUTOTUNE else Choice(cpu_options, conv1x1)
