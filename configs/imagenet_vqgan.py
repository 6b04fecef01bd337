"""Stage 1 on ImageNet 256x256: the release's VQGAN tokenizer recipe.

Launch (TPU pod or GPU cluster; see launch/ and the README):
  python -m maskgit_jax.train --config=configs/imagenet_vqgan.py \
      --workdir=gs://BUCKET/runs/vqgan --config.data.path=/path/to/tfds

Recipe (maskgit/configs/vqgan_config.py): batch 256, Adam b1=0, b2=0.99,
lr 1e-4 for generator and discriminator, perceptual weight 0.1 (needs
--config.tokenizer_training.perceptual_weights=PATH/default_1.pt, the FID
Inception weights; off with a logged note otherwise), non-saturating GAN
weight 0.1, R1 penalty 10, generator EMA 0.999, 1M steps.
Expected cost: tens of TPU-v4 chip-days (the release does not state it);
one step at batch 256 is about 3 TFLOPs of forward and backward work.
"""
import ml_collections

from maskgit_jax.train_lib import defaults


def get_config():
  config = defaults.common(ml_collections.ConfigDict())
  config.stages = ("tokenizer",)
  config.seed = 42
  config.image_size = 256
  config.num_classes = 1000
  config.class_names = ()
  config.data.source = "tfds"
  config.data.name = "imagenet2012"
  config.data.crop_scale = (0.08, 1.0)  # the release's random resized crop

  # Fields left None take the preset's value (settable with --config).
  config.tokenizer = defaults.tokenizer("imagenet", remat="none")
  config.transformer = defaults.transformer(
      "imagenet256", remat="none", scan_layers=False)
  config.tokenizer_training = defaults.tokenizer_training()
  config.tokenizer_training.log_every = 100
  config.tokenizer_training.checkpoint_every = 10_000
  config.tokenizer_training.image_every = 10_000
  config.sampling = defaults.sampling(num_iter=16, samples_per_class=4,
                                     grid_scale=1)
  return config
