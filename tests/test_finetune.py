"""Fine-tuning end to end: configs/finetune_image_folder.py on generated images, from a
weights file exported from a small network of ours (torchvision layout, no torch needed)."""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import finetune_image_folder
from resnet_jax import (
  checkpoint,
  data,
  evaluator,
  experiment,
  metrics,
  parallel,
  pretrained,
  trainer,
)
from resnet_jax.errors import ConfigError
from resnet_jax.models import create_model
from resnet_jax.pretrained import layouts
from tests.data_fixtures import image_folder
from tests.entry_points import assert_same_state

WIDTH = 8


@pytest.fixture(scope='module')
def weights(tmp_path_factory) -> tuple:
  """A 'pretrained' ResNet-18 of width 8 with 10 classes and non-default BN statistics."""
  model = create_model(
    layouts.model_config('resnet18', width=WIDTH), num_classes=10, rngs=nnx.Rngs(1)
  )
  _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  rng = np.random.default_rng(0)
  stats = jax.tree.map(lambda v: v + rng.uniform(-0.1, 0.1, v.shape), nnx.to_pure_dict(batch_stats))
  nnx.replace_by_pure_dict(batch_stats, stats)
  nnx.update(model, batch_stats)
  path = tmp_path_factory.mktemp('weights') / 'resnet18.safetensors'
  pretrained.export(model, path)
  return path, nnx.to_pure_dict(params), stats


def finetune_config(weights_path, folder, arg, num_steps=12):
  config = finetune_image_folder.get_config(arg)
  config.model.width, config.model.bn_group_size = WIDTH, 0
  config.pretrained.weights = str(weights_path)
  data = config.data
  data.dataset = f'image_folder:{folder}'
  data.image_size = 32
  data.train_split = data.eval_split = 'train'
  train = config.train
  train.batch_size = 6
  train.cpu_options = 'ynn:dot'
  train.num_epochs, train.num_steps = 0.0, num_steps
  train.log_every, train.eval_every, train.checkpoint_every = 3, num_steps, num_steps
  config.optim.learning_rate = 1.0
  return config


def _final_state(config, workdir):
  setup = experiment.setup(config, parallel.create_mesh(), pretrained_weights=False)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', read_only=True)
  state, _ = ckpt.restore(setup.state)
  return state


def _backbone(tree: dict) -> dict:
  return {k: v for k, v in tree.items() if k != 'head'}


def _equal(a: dict, b: dict) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)))


@pytest.mark.parametrize('arg', ['resnet18,frozen', 'resnet18'])
def test_fine_tunes_a_new_head_on_an_image_folder(weights, tmp_path, arg):
  path, params, batch_stats = weights
  folder = image_folder(tmp_path / 'images', per_class=4)  # 3 classes
  config = finetune_config(path, folder, arg)
  start = experiment.setup(config, parallel.create_mesh()).state
  assert _equal(_backbone(start.params), _backbone(params))
  assert _equal(start.batch_stats, batch_stats)
  assert start.params['head']['kernel'].shape == (8 * WIDTH, 3)  # New head, 3 classes.

  result = trainer.train_and_evaluate(config, tmp_path / 'run')
  state = _final_state(config, tmp_path / 'run')
  frozen = arg.endswith('frozen')
  assert _equal(_backbone(state.params), _backbone(params)) == frozen
  assert _equal(state.batch_stats, batch_stats) == frozen  # Frozen: BN statistics too.
  assert not _equal(state.params['head'], start.params['head'])
  losses = [r['loss'] for r in metrics.read_metrics(tmp_path / 'run', 'train')]
  assert np.isfinite(result['loss']) and losses[-1] < losses[0]


def test_loading_the_head_needs_the_same_classes(weights, tmp_path):
  folder = image_folder(tmp_path / 'images', per_class=2)
  config = finetune_config(weights[0], folder, 'resnet18')
  config.pretrained.load_head = True
  with pytest.raises(ConfigError, match=r"'fc.bias' has shape \(10,\), this "):
    experiment.setup(config, parallel.create_mesh())


def test_a_resumed_fine_tune_does_not_need_the_weights_file_again(weights, tmp_path):
  """After preemption the run may restart where the pretrained file is not: its weights
  are in the checkpoint."""
  path = tmp_path / 'resnet18.safetensors'
  path.write_bytes(weights[0].read_bytes())
  folder = image_folder(tmp_path / 'images', per_class=2)
  trainer.train_and_evaluate(
    finetune_config(path, folder, 'resnet18', num_steps=3), tmp_path / 'run'
  )
  path.unlink()
  trainer.train_and_evaluate(
    finetune_config(path, folder, 'resnet18', num_steps=6), tmp_path / 'run'
  )
  assert (
    checkpoint.Checkpointer(tmp_path / 'run' / 'checkpoints', read_only=True).latest_step() == 6
  )
  with pytest.raises(ConfigError, match='resnet18.safetensors'):  # a new run still needs it
    trainer.train_and_evaluate(finetune_config(path, folder, 'resnet18'), tmp_path / 'new')


def test_a_fine_tune_whose_checkpoints_are_all_unreadable_starts_over_from_the_weights(
  weights, tmp_path
):
  """Every step set aside as damaged: the rerun is a new run, pretrained weights included."""
  folder = image_folder(tmp_path / 'images', per_class=2)
  config = finetune_config(weights[0], folder, 'resnet18', num_steps=3)
  trainer.train_and_evaluate(config, tmp_path / 'straight')
  trainer.train_and_evaluate(config, tmp_path / 'damaged')
  metrics_file = tmp_path / 'damaged' / 'checkpoints' / '3' / 'metrics' / 'metrics'
  metrics_file.write_bytes(metrics_file.read_bytes()[:5])  # fails orbax's opening of the run

  trainer.train_and_evaluate(config, tmp_path / 'damaged')
  assert (tmp_path / 'damaged' / 'checkpoints' / '3.unreadable').is_dir()
  assert_same_state(
    _final_state(config, tmp_path / 'damaged'), _final_state(config, tmp_path / 'straight')
  )


def test_a_weight_file_is_evaluated_as_it_is(weights):
  """evaluate.py --weights: the file's network, classifier included, on the eval split."""
  path, params, batch_stats = weights
  config = finetune_config(path, 'unused', 'resnet18')
  config.data.dataset, config.data.eval_split = 'synthetic', 'test[:20]'  # 10 classes
  config.train.eval_batch_size = 10
  result = evaluator.evaluate_weights_file(config, eval_resize=40)
  assert (result['weights'], result['num_examples'], result['resize']) == (str(path), 20, 40)

  model = create_model(
    layouts.model_config('resnet18', width=WIDTH), num_classes=10, rngs=nnx.Rngs(0)
  )
  graphdef, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  model = nnx.merge(graphdef, params, batch_stats)
  model.eval()
  config.data.eval_resize = 40
  batches = list(data.create_eval_iterator(config.data, global_batch_size=10))
  logits = np.concatenate([np.asarray(model(b['image'])) for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert result['top1'] == pytest.approx(np.mean(logits.argmax(-1) == labels))
  loss = np.mean(metrics.cross_entropy(logits, labels))
  assert result['loss'] == pytest.approx(float(loss), rel=1e-4)
