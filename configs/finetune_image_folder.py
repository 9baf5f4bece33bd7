"""Fine-tunes a pretrained ImageNet ResNet on a folder of images (one subfolder per class).

  python -m resnet_jax.pretrained --source=torchvision --arch=resnet50 \
    --src=resnet50-11ad3fa6.pth --dst=weights
  python train.py --config=configs/finetune_image_folder.py:resnet50 \
    --config.data.dataset=image_folder:/data/flowers --workdir=runs/ft_r50
  python train.py --config=configs/finetune_image_folder.py:resnet18,frozen \
    --config.data.dataset=image_folder:/data/flowers --workdir=runs/probe_r18

The argument is ARCH (resnet18, resnet34, resnet50, resnet101, resnet152) and
optionally `frozen`: train the new classifier only (a linear probe; the
backbone's parameters and BN statistics stay as loaded). Otherwise the
backbone trains at a tenth of the head's rate. The first command converts
torchvision's download once into weights/<arch>.safetensors (the default
`pretrained.weights`), so training needs no torch; timm's model.safetensors
loads as it is with --config.pretrained.source=timm
--config.pretrained.weights=FILE. The head is new, with as many classes as the
folder has subfolders. The folder is split 90/10 into train and eval; with
train/ and val/ subfolders set data.train_split=train and data.eval_split=val.
Recipe: SGD with momentum 0.9, 0.01 at batch 64 (0.04 per 256), cosine decay
after one epoch of warmup, 30 epochs, Inception crops at 224.
Hardware and result: not measured on a real dataset yet (no pretrained
weights can be downloaded where this was written); tests/test_finetune.py runs
it end to end on generated images.
"""

from resnet_jax import defaults
from resnet_jax.pretrained import layouts

STRUCTURE = ('depth', 'block', 'stem', 'shortcut', 'variant', 'width')


def get_config(arg: str = 'resnet50'):
  arch, *options = arg.split(',')
  if arch not in layouts.ARCHS or any(o != 'frozen' for o in options):
    raise ValueError(
      f'config argument {arg!r}: expected ARCH[,frozen] with ARCH one of {", ".join(layouts.ARCHS)}'
    )
  config = defaults.get_config()
  pretrained_model = layouts.model_config(arch)
  for field in STRUCTURE:
    config.model[field] = pretrained_model[field]

  config.pretrained.weights = f'weights/{arch}.safetensors'
  config.pretrained.source = 'torchvision'

  data = config.data
  data.dataset = 'image_folder:data/images'  # set --config.data.dataset=image_folder:<path>
  data.train_split = 'train[:90%]'
  data.eval_split = 'train[90%:]'
  data.image_size = 224
  data.preprocess = 'imagenet'
  data.train_crop = 'inception'

  train = config.train
  train.batch_size = 64
  train.num_steps = 0
  train.num_epochs = 30.0
  train.log_every = 20
  train.eval_every = 500
  train.checkpoint_every = 500

  optim = config.optim
  optim.learning_rate = 0.04  # per 256 images: 0.01 at batch 64
  optim.schedule = 'cosine'
  optim.warmup_epochs = 1.0
  optim.backbone_lr_scale = 0.0 if 'frozen' in options else 0.1
  return config
