"""MaskGIT class-conditional ImageNet 256x256, the released model's sizes.

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


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 42
  config.image_size = 256
  config.num_classes = 1000
  config.class_names = ()

  config.tokenizer = ml_collections.ConfigDict(dict(preset="imagenet"))
  config.transformer = ml_collections.ConfigDict(dict(preset="imagenet256"))

  # The release's inference settings (maskgit/inference.py).
  config.sampling = ml_collections.ConfigDict(dict(
      num_iter=16, choice_temperature=4.5, mask_scheduling_method="cosine",
      guidance_scale=0.0, guidance_schedule="constant",
      sampling_temperature=1.0, top_k=0, samples_per_class=4))
  return config
