"""MaskGIT class-conditional ImageNet 256x256, the released model's sizes.

Training stage 2 (the tokenizer from the released file, or from a stage-1
run with --config.tokenizer_checkpoint="" and the same --workdir):
  python -m maskgit_jax.train --config=configs/imagenet.py --workdir=DIR \
      --config.tokenizer_checkpoint=checkpoints/tokenizer_imagenet256_checkpoint \
      --config.data.path=/path/to/tfds

Recipe (maskgit_class_cond_config.py): 24 layers, hidden 768, 16 heads, MLP
3072, dropout 0.1, batch 256, AdamW lr 1e-4, b 0.9/0.96, weight decay 0.045,
5,000 warm-up steps then cosine decay, label smoothing 0.1, cosine masking
with at least half of each grid masked (min_masking_rate 0.5), loss on
masked tokens, 2M steps. Expected cost: one step is about
6 x 172M x 257 x 256 = 68 TFLOPs (+ tokenizer forward), so 2M steps are
about 1.4e20 FLOPs: weeks on a v4-32 slice at 40% utilisation.

Sampling from the released checkpoints:
  python -m maskgit_jax.sample --config=configs/imagenet.py \
      --tokenizer_checkpoint=checkpoints/tokenizer_imagenet256_checkpoint \
      --transformer_checkpoint=checkpoints/maskgit_imagenet256_checkpoint \
      --classes=1,207,360 --output=samples.png

Expected cost: one transformer forward at batch 2 takes about 1 s on a 2-core
CPU, so a 16-iteration sample of 8 images takes about a minute there; on one
modern accelerator it is well under a second. Models: tokenizer 54.5M
parameters (1024 codes, 16x16 tokens), transformer 172.5M (24 layers, hidden
768, 16 heads, MLP 3072).
"""
import ml_collections

from maskgit_jax.train_lib import defaults


def get_config():
  config = defaults.common(ml_collections.ConfigDict())
  config.stages = ("transformer",)
  config.seed = 42
  config.image_size = 256
  config.num_classes = 1000
  config.class_names = ()

  # Fields left None take the preset's value (settable with --config).
  config.tokenizer = defaults.tokenizer("imagenet", remat="none")
  config.transformer = defaults.transformer(
      "imagenet256", remat="none", scan_layers=False)
  config.data.source = "tfds"
  config.data.name = "imagenet2012"
  config.data.crop_scale = (0.08, 1.0)
  config.tokenizer_training = defaults.tokenizer_training()
  config.transformer_training = defaults.transformer_training()
  # The release config's min_masking_rate: at least half of each grid masked
  # (on the embedded default it took sample FID from 1.85x to 1.72x the
  # floor: README "Measured").
  config.transformer_training.min_mask_ratio = 0.5
  config.transformer_training.log_every = 100
  config.transformer_training.checkpoint_every = 10_000
  config.transformer_training.image_every = 10_000

  # The release's inference settings (maskgit/inference.py).
  config.sampling = defaults.sampling(num_iter=16, samples_per_class=4,
                                     grid_scale=1)
  return config
