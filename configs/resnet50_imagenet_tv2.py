"""ResNet-50 on ImageNet, torchvision's "new recipe" of ResNet50_Weights.IMAGENET1K_V2.

  python train.py --config=configs/resnet50_imagenet_tv2.py --workdir=runs/r50_tv2
  python evaluate.py --workdir=runs/r50_tv2

Expected: 80.858% top-1 / 95.434% top-5, single 224 center crop of a 232 resize
(the last row of the table in V. Vryniotis, "How to Train State-Of-The-Art Models Using
TorchVision's Latest Primitives", PyTorch blog, 2021, the weights published as IMAGENET1K_V2;
80.674% before the repeated augmentation that we do not have, see below). The best of 3
runs, EMA weights.

Source, every value checked against the blog's recipe and command (the same flags are in
pytorch/vision's references/classification/README.md for ShuffleNet V2 x1.5 and x2.0;
that README's ResNet section gives only the old 90-epoch command):

  torchrun --nproc_per_node=8 train.py --model resnet50 --batch-size 128 --lr 0.5 \
    --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear \
    --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 \
    --norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0 \
    --train-crop-size 176 --model-ema --val-resize-size 232 --ra-sampler --ra-reps 4

with train.py's defaults for what it leaves out: SGD momentum 0.9, lr_warmup_decay 0.01,
model_ema_steps 32, model_ema_decay 0.99998, bilinear interpolation, val crop 224 (the
blog lists all of these). 8 GPUs x 128 = batch 1024; BatchNorm per GPU (no --sync-bn).

Where this differs from torchvision:
- Repeated augmentation (--ra-sampler --ra-reps 4: each image 4 times per epoch, a
  quarter of the images per epoch, on different GPUs) is not implemented; the blog
  credits it with +0.184 points (80.674 -> 80.858).
- The schedule moves every step; torchvision's LinearLR/CosineAnnealingLR step once per
  epoch. (Its EMA restarts from the weights during the 5 warmup epochs, as ours does with
  optim.ema_after_warmup; ours checks at every step, torchvision at every EMA update.)
- mixup/CutMix draw one coefficient per global batch of 1024 (torchvision: per GPU
  batch of 128, mixing with the batch rolled by one; ours with the batch reversed).
- Weight decay skips BatchNorm (--norm-weight-decay 0) and, here, also the classifier's
  bias, which torchvision decays (its only bias: ResNet-50's convolutions have none).
- bfloat16 compute; the command has no --amp, so torchvision trained in float32.
- Image resizing is our pipeline's bilinear (TensorFlow's), not PIL's.

Hardware: torchvision trained on 8 V100s ("Except otherwise noted, all models have been
trained on 8x V100 GPUs", the README) and publishes no training time. Estimates, not
measured: the train step at 176x176 about 20 h on one H200 for the 769M images of 600
epochs (the measured 6,683 img/s at 224, docs/results/gpu_h200.md, scaled by pixels);
with reading, decoding and TrivialAugment of ImageNet on the host, about 3 days on one
H100. torchvision's own run: about 2 days on 8 V100s in float32 (estimate).
"""

from configs import resnet_imagenet

GPUS, PER_GPU_BATCH = 8, 128  # --nproc_per_node=8 --batch-size 128
TORCHVISION_LR = 0.5  # --lr, for the global batch of 8 x 128
EPOCHS = 600
EMA_STEPS, EMA_DECAY = 32, 0.99998  # --model-ema-steps, --model-ema-decay (train.py defaults)


def torchvision_ema_decay(
  decay=EMA_DECAY, steps=EMA_STEPS, gpus=GPUS, per_gpu_batch=PER_GPU_BATCH, epochs=EPOCHS
):
  """The decay per EMA update that torchvision's train.py uses: it scales 1 - decay by
  world_size * batch_size * ema_steps / epochs ("adjust"), so that
  alpha = min(1, (1 - decay) * gpus * per_gpu_batch * steps / epochs), decay_eff = 1 - alpha.
  For the recipe: 1 - 2e-5 * 8 * 128 * 32 / 600 = 0.998907733..."""
  return 1.0 - min(1.0, (1.0 - decay) * gpus * per_gpu_batch * steps / epochs)


def get_config():
  config = resnet_imagenet.get_config('50')

  model = config.model
  model.variant = 'v1.5'  # torchvision's ResNet-50: the stride in the 3x3 convolution
  model.shortcut = 'B'  # projection shortcuts where the shape changes
  model.zero_init_residual = False  # torchvision's default, left so by train.py
  model.bn_group_size = PER_GPU_BATCH  # BatchNorm statistics per GPU, no SyncBN
  model.bn_unbiased_var = True  # PyTorch keeps the unbiased running variance (the default)
  model.drop_path_rate = 0.0
  model.dtype = 'bfloat16'

  data = config.data
  data.train_crop = 'inception'  # RandomResizedCrop: 8-100% of the area, aspect 3/4-4/3
  data.image_size = 176  # --train-crop-size 176 (FixRes mitigation)
  data.eval_image_size = 224  # --val-crop-size (default 224)
  data.eval_resize = 232  # --val-resize-size 232
  data.pca_lighting = 0.0
  data.augment = 'trivialaugment'  # --auto-augment ta_wide (TrivialAugmentWide)
  data.random_erasing = 0.1  # --random-erase 0.1
  data.mixup_alpha = 0.2  # --mixup-alpha 0.2
  data.cutmix_alpha = 1.0  # --cutmix-alpha 1.0
  data.mix_switch_prob = 0.5  # torchvision's RandomChoice of the two: one or the other, 1/2

  train = config.train
  train.batch_size = GPUS * PER_GPU_BATCH  # 1024
  train.num_steps = 0
  train.num_epochs = float(EPOCHS)
  train.log_every = 100
  train.eval_every = 6_255  # 5 epochs of 1,251 steps
  train.checkpoint_every = 1_251  # an epoch
  train.grad_accum_steps = 1

  optim = config.optim
  optim.optimizer = 'sgd'
  optim.momentum = 0.9
  optim.nesterov = False
  # Ours is per 256 images (rate = learning_rate * batch / 256): 0.5 at 1024 is 0.125.
  optim.learning_rate = TORCHVISION_LR * 256 / (GPUS * PER_GPU_BATCH)
  optim.schedule = 'cosine'  # --lr-scheduler cosineannealinglr, down to 0 (--lr-min 0)
  optim.warmup = 'linear'  # --lr-warmup-method linear
  optim.warmup_epochs = 5.0  # --lr-warmup-epochs 5
  optim.warmup_factor = 0.01  # --lr-warmup-decay (train.py's default 0.01)
  optim.weight_decay = 2e-5  # --weight-decay 0.00002 (SGD's L2 penalty, as ours)
  optim.decay_bn_and_bias = False  # --norm-weight-decay 0.0 (our mask also skips fc.bias)
  optim.loss = 'softmax'
  optim.label_smoothing = 0.1  # --label-smoothing 0.1
  optim.ema_every = EMA_STEPS  # --model-ema-steps 32
  optim.ema_decay = torchvision_ema_decay()  # 0.99890773: see torchvision_ema_decay
  optim.ema_after_warmup = True  # train.py: n_averaged reset during the warmup epochs
  return config
