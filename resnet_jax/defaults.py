"""Every configuration field, with its default: the base of all experiments.

A config file starts from `defaults.get_config()` and overrides what differs, so
a misspelled override (`--config.model.dept=34`) is an error, not a no-op:

  from resnet_jax import defaults

  def get_config():
    config = defaults.get_config()
    config.model.depth = 56
    return config

The values each field takes are checked, all sections at once, by
`experiment.check_config` before a dataset is opened.
"""

import json

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # every random stream (init, data order, augmentation) derives from it

  config.model = model = ml_collections.ConfigDict()
  model.depth = 20  # as the papers count it: 18..200 (ImageNet), 6n+2, 9n+2 or 3n+2 (CIFAR)
  # auto (bottleneck for ImageNet depth >= 50) | basic | bottleneck | one_layer (CIFAR 3n+2)
  model.block = 'auto'
  model.stem = 'cifar'  # imagenet (7x7/2 conv + 3x3/2 max-pool) | cifar (3x3 conv)
  model.shortcut = 'A'  # A zero-pad | B project on change | C always | D avg-pool+project | none
  model.variant = 'v1'  # v1 (stride in first 1x1) | v1.5 (stride in 3x3) | preact (BN-ReLU-conv)
  # ... or Identity Mappings Table 2's units: bn_after_add | relu_before_add | relu_preact
  # how shortcut h and branch F combine: off (h+F) | constant | exclusive | shortcut_only | dropout
  model.gate = 'off'
  model.gate_bias = 0.0  # initial bias b of the gates g = sigmoid(1x1 conv(x) + b)
  model.width = 16  # filters of the first stage (64 ImageNet, 16 CIFAR)
  model.zero_init_residual = False  # last BN scale of each residual branch starts at 0
  model.bn_group_size = 32  # examples per BatchNorm statistics group; 0 = the whole batch
  model.dtype = 'float32'  # compute dtype: float32 | bfloat16 (parameters stay float32)
  # 1x1 convs as: einsum | conv | auto (conv on GPU/TPU; on CPU einsum, or the faster of the
  # two where train.cpu_options=autotune times them)
  model.conv1x1 = 'auto'
  model.scan = False  # run each stage's repeated units under lax.scan (one compiled unit body)
  model.remat = False  # recompute each unit's activations in the backward pass (saves memory)
  # stochastic depth (Huang et al. 2016): the last unit's branch is dropped with this
  # probability in training, earlier units' linearly less (0 = off)
  model.drop_path_rate = 0.0
  # BatchNorm's running variance: the unbiased m/(m-1) estimate of the batch variance, as
  # Ioffe & Szegedy, Caffe and PyTorch keep for inference; False = the biased one (Flax's)
  model.bn_unbiased_var = True

  config.data = data = ml_collections.ConfigDict()
  data.dataset = 'cifar10'  # TFDS name, image_folder:<path>, or synthetic
  # tfdata: tf.data on the host feeds each step | device: a small train split (CIFAR, MNIST,
  # Fashion-MNIST, ...) held as uint8 in accelerator memory, each step's batch gathered and
  # augmented inside the jitted step (cifar family only)
  data.pipeline = 'tfdata'
  data.train_split = 'train'  # TFDS split string, e.g. train[:45000]
  data.eval_split = 'test'  # TFDS split string, e.g. train[45000:]
  data.image_size = 32  # input resolution (square)
  data.preprocess = 'cifar'  # augmentation family: imagenet | cifar
  data.train_crop = 'scale'  # imagenet train crop: scale (shorter side in [256, 480]) | inception
  data.pca_lighting = 0.0  # std of AlexNet PCA lighting noise (0.1 in the paper; 0 = off)
  data.normalize = 'pixel_mean'  # cifar family: pixel_mean (the paper) | channel (mean/std)
  data.crop_padding = 4  # cifar family: zero padding before the random crop
  data.random_flip = True  # horizontal flips in training (False for digits)
  # imagenet and cifar families, train: none | randaugment | trivialaugment (TrivialAugmentWide)
  data.augment = 'none'
  data.randaugment_ops = 2  # randaugment: operations per image (n)
  data.randaugment_magnitude = 9  # randaugment: magnitude m of 0..30 (torchvision's scale)
  data.random_erasing = 0.0  # probability of erasing a random rectangle (Zhong et al.; 0 = off)
  data.eval_image_size = 0  # resolution of evaluation (FixRes: train 176, test 224); 0 = image_size
  data.eval_resize = 0  # imagenet family: shorter side before the center crop; 0 = size * 256/224
  # mixup / CutMix, applied to each training batch on the device (0 = off); with both on, a
  # batch is CutMix with probability mix_switch_prob, else mixup
  data.mixup_alpha = 0.0
  data.cutmix_alpha = 0.0
  data.mix_switch_prob = 0.5
  data.data_dir = ''  # where prepared TFDS datasets live ('' = TFDS's default)
  # data.pipeline='device' only: a directory of the dataset's original files (MNIST and
  # Fashion-MNIST IDX, CIFAR-10/100 python archives), read without TensorFlow or TFDS;
  # '' = TFDS's prepared files
  data.original_dir = ''

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 128  # global batch, over all devices and hosts
  train.num_epochs = 0.0  # training length in epochs (used when num_steps is 0)
  train.num_steps = 64_000  # training length in steps; > 0 wins over num_epochs
  train.log_every = 100  # steps between training metric writes
  train.eval_every = 2_000  # steps between evaluations of the eval split
  train.checkpoint_every = 2_000  # steps between checkpoints
  train.keep_checkpoints = 3  # recent checkpoints kept (plus the best)
  train.eval_batch_size = 0  # global batch for evaluation (0 = train.batch_size)
  train.on_nonfinite = 'stop'  # NaN/inf loss or gradient: stop (naming the step) | skip the update
  # How the steps compile on CPU: autotune (time the candidates once per machine, cached)
  # | xla (XLA's default) | ynn-off | ynn:<YNNPACK fusion kinds>, e.g. ynn:dot,reduce
  train.cpu_options = 'autotune'
  train.grad_accum_steps = 1  # micro-batches of batch_size / k per update (same BN groups)
  # runs trained at once by one vmapped step (seeds seed, seed + 1, ...: own initialization,
  # data order, augmentation); metrics per seed and their mean, one checkpoint of all
  train.num_seeds = 1

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'sgd'  # sgd | lars | adamw | lamb
  optim.learning_rate = 0.2  # base rate per 256 images (linear scaling rule)
  optim.momentum = 0.9  # SGD and LARS momentum
  optim.nesterov = False  # Nesterov momentum
  optim.weight_decay = 1e-4  # sgd, lars: L2 penalty; adamw, lamb: decoupled, x learning rate
  optim.decay_bn_and_bias = True  # apply weight decay to BN parameters and biases too
  optim.schedule = 'piecewise'  # piecewise | cosine | constant
  optim.warmup = 'linear'  # linear (from warmup_factor x rate up) | constant (warmup_factor x rate)
  optim.warmup_steps = 0  # warmup length in steps (see optim.warmup)
  optim.warmup_epochs = 0.0  # warmup length in epochs (used when warmup_steps is 0)
  optim.warmup_factor = 0.0  # rate during/at the start of warmup, x rate; ResNet-110: 0.1
  optim.boundaries = (32_000, 48_000)  # piecewise: where the rate is x decay_factor
  optim.boundaries_unit = 'steps'  # steps | epochs: what optim.boundaries count
  optim.decay_factor = 0.1  # piecewise: multiplier at each boundary
  optim.loss = 'softmax'  # softmax (cross-entropy) | bce (binary cross-entropy per class, RSB)
  optim.label_smoothing = 0.0  # label smoothing of the targets (both losses)
  # bce: (mixed, smoothed) targets above it count as 1, the rest 0 (timm's RSB commands: 0.2);
  # 0 = soft targets
  optim.bce_target_threshold = 0.0
  optim.grad_clip_norm = 0.0  # clip the gradient's global norm first (0 = off)
  optim.lars_trust_coefficient = 0.001  # LARS trust coefficient (optimizer=lars)
  optim.adam_betas = (0.9, 0.999)  # adamw, lamb: Adam's moment decays b1, b2
  optim.adam_eps = 1e-8  # adamw, lamb: Adam's epsilon (RSB's LAMB: 1e-6)
  # EMA of the parameters and BN statistics, updated every ema_every steps with this decay
  # (0 = off); evaluated beside the raw weights, kept in the checkpoints
  optim.ema_decay = 0.0
  optim.ema_every = 1
  optim.ema_after_warmup = (
    False  # the EMA is the weights until the rate's warmup ends (torchvision)
  )
  optim.backbone_lr_scale = 1.0  # rate of all but the head, x the rate; 0 = frozen (BN stats too)

  config.pretrained = pretrained = ml_collections.ConfigDict()
  pretrained.weights = ''  # file to start from: .safetensors (.pth needs torch); '' = random init
  pretrained.source = 'torchvision'  # layout of the file: torchvision | timm
  pretrained.load_head = False  # also load the file's classifier (same classes); else a new head
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(text: str) -> ml_collections.ConfigDict:
  """A config saved with `to_json`, laid over the defaults: fields added to the codebase
  since it was saved read as their defaults, and fields it no longer has are dropped."""
  config = get_config()
  _update(config, json.loads(text))
  return config


def _update(config: ml_collections.ConfigDict, saved: dict):
  for key, value in saved.items():
    if key not in config:
      continue
    if isinstance(value, dict):
      _update(config[key], value)
    else:
      config[key] = tuple(value) if isinstance(config[key], tuple) else value
