"""torchvision's and timm's ResNet weights load into ours and give the same outputs.

The reference networks (random weights and BN statistics) run in processes of
their own (tests/torch_reference.py): torchvision next to TensorFlow, which
other tests import, crashes. Without torch, torchvision or timm these tests
skip, except under CI=true, where they fail: CI installs requirements-dev.txt.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx, traverse_util

from resnet_jax import pretrained
from resnet_jax.models import create_model
from resnet_jax.pretrained import files, layouts

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).with_name('torch_reference.py')
NETWORKS = [('torchvision', 'resnet18'), ('torchvision', 'resnet50')]
NETWORKS += [('timm', 'resnet18'), ('timm', 'resnet50')]
STAGES = ('c2', 'c3', 'c4', 'c5')


def _torch_process(*args: str, timeout=600):
  missing = [m for m in ('torch', 'torchvision', 'timm') if importlib.util.find_spec(m) is None]
  if missing:
    message = f'{", ".join(missing)} missing: pip install -r requirements-dev.txt'
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(message)
    pytest.skip(message)
  result = subprocess.run(
    [sys.executable, str(REFERENCE), *args], capture_output=True, text=True, timeout=timeout
  )
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope='module')
def references(tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp('references')
  _torch_process('make', f'--out={out}', '--size=72')
  return out


@pytest.fixture(scope='module')
def resnet18_file(tmp_path_factory) -> Path:
  """A randomly initialized ResNet-18 of ours, exported (no torch needed)."""
  path = tmp_path_factory.mktemp('ours') / 'resnet18.safetensors'
  config = layouts.model_config('resnet18')
  pretrained.export(create_model(config, num_classes=1000, rngs=nnx.Rngs(0)), path)
  return path


def _max_differences(model, reference) -> dict[str, float]:
  images = reference['images']
  ours = {'logits': model(images), **dict(zip(STAGES, model.features(images), strict=True))}
  return {k: float(np.max(np.abs(np.asarray(v) - reference[k]))) for k, v in ours.items()}


@pytest.mark.parametrize('source,arch', NETWORKS)
def test_logits_and_stage_features_match_the_reference(references, source, arch):
  model = pretrained.load(source, arch, references / f'{source}_{arch}.safetensors')
  reference = np.load(references / f'{source}_{arch}.npz')
  differences = _max_differences(model, reference)
  print(f'{source} {arch} max |ours - theirs|:', json.dumps(differences))
  assert differences['logits'] < 1e-4
  for stage in STAGES:  # Float32 rounding: features reach ~100 in ResNet-50's last stages.
    assert differences[stage] < 1e-4 * max(1.0, float(np.max(np.abs(reference[stage]))))
  shapes = [reference[stage].shape[1:3] for stage in STAGES]
  assert shapes == [(18, 18), (9, 9), (5, 5), (3, 3)]  # strides 4..32 of 72, rounded up


def _arrays(model) -> dict:
  return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat))))


def test_pth_file_loads_like_its_safetensors_twin(references):
  from_pth = _arrays(
    pretrained.load('torchvision', 'resnet18', references / 'torchvision_resnet18.pth')
  )
  from_safetensors = _arrays(
    pretrained.load('torchvision', 'resnet18', references / 'torchvision_resnet18.safetensors')
  )
  assert from_pth.keys() == from_safetensors.keys()
  assert all(np.array_equal(from_pth[k], from_safetensors[k]) for k in from_pth)


def test_export_is_the_inverse_and_loads_into_torchvision(references, tmp_path):
  source = references / 'torchvision_resnet18.safetensors'
  model = pretrained.load('torchvision', 'resnet18', source)
  exported = tmp_path / 'exported.safetensors'
  pretrained.export(model, exported)
  original = files.read(source)
  written = files.read(exported)
  assert written.keys() == {k for k in original if not k.endswith('num_batches_tracked')}
  assert all(np.array_equal(written[k], original[k]) for k in written)
  out = tmp_path / 'torch_logits.npz'
  inputs = references / 'torchvision_resnet18.npz'
  _torch_process(
    'run', '--arch=resnet18', f'--weights={exported}', f'--inputs={inputs}', f'--out={out}'
  )
  theirs = np.load(out)['logits']
  np.testing.assert_allclose(model(np.load(inputs)['images']), theirs, atol=1e-4, rtol=0)


def _load_error(path, source='torchvision', arch='resnet18') -> str:
  with pytest.raises(ValueError) as error:
    pretrained.load(source, arch, path)
  message = str(error.value)
  assert '\n' not in message
  return message


def _edited(resnet18_file, tmp_path, edit) -> Path:
  arrays = files.read(resnet18_file)
  edit(arrays)
  path = tmp_path / 'edited.safetensors'
  files.write(path, arrays)
  return path


def test_wrong_arch_names_the_network_in_the_file_and_a_key(resnet18_file):
  message = _load_error(resnet18_file, arch='resnet50')
  assert "holds a resnet18, not a resnet50: it has no 'layer1.0.bn3.bias'" in message


def test_missing_key_is_named(resnet18_file, tmp_path):
  path = _edited(resnet18_file, tmp_path, lambda a: a.pop('layer2.0.downsample.1.running_var'))
  message = _load_error(path)
  assert message.endswith(
    "does not match a resnet18: it has no 'layer2.0.downsample.1.running_var'"
  )


def test_unexpected_key_is_named(resnet18_file, tmp_path):
  def add(arrays):
    arrays['layer4.0.se.fc.weight'] = np.zeros((8, 512), np.float32)

  message = _load_error(_edited(resnet18_file, tmp_path, add))
  assert "it has 'layer4.0.se.fc.weight', which this network does not" in message


def test_wrong_shape_is_named(resnet18_file, tmp_path):
  def reshape(arrays):
    arrays['layer3.1.conv2.weight'] = np.zeros((256, 256, 1, 3), np.float32)

  message = _load_error(_edited(resnet18_file, tmp_path, reshape))
  expected = (
    "'layer3.1.conv2.weight' has shape (256, 256, 1, 3), this network needs (256, 256, 3, 3)"
  )
  assert expected in message


def test_scanned_network_loads_and_exports_the_same_arrays(resnet18_file, tmp_path):
  """A scanned stage stores units 1.. stacked; the file keeps one key per unit either way."""
  scanned = pretrained.load('torchvision', 'resnet18', resnet18_file, scan=True)
  kernel = nnx.to_pure_dict(nnx.state(scanned))['stages'][3]['repeated']['convs'][1]['kernel']
  np.testing.assert_array_equal(
    kernel[0],
    layouts.to_ours('layer4.1.conv2.weight', files.read(resnet18_file)['layer4.1.conv2.weight']),
  )
  pretrained.export(scanned, tmp_path / 'scanned.safetensors')
  exported, original = files.read(tmp_path / 'scanned.safetensors'), files.read(resnet18_file)
  assert exported.keys() == original.keys()
  for name, array in original.items():
    np.testing.assert_array_equal(exported[name], array)


def test_timm_deep_stem_is_refused(references):
  message = _load_error(references / 'timm_resnet50d.safetensors', source='timm', arch='resnet50')
  assert 'deep stem' in message and 'conv1.0.weight' in message


@pytest.mark.parametrize(
  'source,arch,expected',
  [
    ('timm', 'resnet50d', "timm's ResNet-D"),
    ('torchvision', 'resnet20', "unknown arch 'resnet20'"),
    ('caffe', 'resnet50', "unknown weights source 'caffe'"),
  ],
)
def test_unsupported_source_or_arch(resnet18_file, source, arch, expected):
  assert expected in _load_error(resnet18_file, source, arch)


def test_pth_without_torch_is_a_one_line_error(tmp_path, monkeypatch):
  path = tmp_path / 'resnet18.pth'
  path.write_bytes(b'')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  assert 'torch is not installed' in _load_error(path)


def test_networks_without_the_torchvision_layout_are_refused(model_config, tmp_path):
  model = create_model(model_config, num_classes=10, rngs=nnx.Rngs(0))  # CIFAR, option A
  with pytest.raises(ValueError, match="shortcut='A'"):
    pretrained.export(model, tmp_path / 'cifar.safetensors')


def _convert(*flags: str):
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(
    [sys.executable, '-m', 'resnet_jax.pretrained', *flags],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )


def test_convert_command_writes_a_checked_safetensors_file(references, tmp_path):
  src = references / 'torchvision_resnet18.pth'
  result = _convert('--source=torchvision', '--arch=resnet18', f'--src={src}', f'--dst={tmp_path}')
  assert result.returncode == 0, result.stderr[-2000:]
  line = json.loads(result.stdout.strip().splitlines()[-1])
  assert line['dst'] == str(tmp_path / 'resnet18.safetensors') and line['num_classes'] == 1000
  assert len(line['src_sha256']) == 64
  original = files.read(references / 'torchvision_resnet18.safetensors')
  written = files.read(line['dst'])
  assert all(np.array_equal(written[k], original[k]) for k in written)

  wrong = _convert('--source=torchvision', '--arch=resnet50', f'--src={src}', f'--dst={tmp_path}')
  assert wrong.returncode == 2
  assert wrong.stderr.strip().splitlines()[-1].startswith(f'error: {src} holds a resnet18')
