"""MaskGIT class-conditional ImageNet 512x512, the released model's sizes.

Sampling from the released checkpoints:
  python -m maskgit_jax.sample --config=configs/imagenet512.py \
      --tokenizer_checkpoint=checkpoints/tokenizer_imagenet512_checkpoint \
      --transformer_checkpoint=checkpoints/maskgit_imagenet512_checkpoint \
      --classes=1,207,360 --output=samples.png

Expected cost: 1025 tokens per image (4x the 256 model's), so about 4x its
dense cost and 16x its attention cost per forward; use an accelerator.
Models: tokenizer 54.5M parameters (32x32 tokens), transformer 173.0M.
"""
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "maskgit_configs_imagenet", pathlib.Path(__file__).with_name("imagenet.py"))
_imagenet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_imagenet)


def get_config():
  config = _imagenet.get_config()
  config.image_size = 512
  config.transformer.preset = "imagenet512"
  return config
