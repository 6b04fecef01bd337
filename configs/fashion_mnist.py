"""The embedded default: MaskGIT on Fashion-MNIST (32x32 grey, 8x8 tokens).

Launch (the README's `make demo`):
  python -m maskgit_jax.sample --config=configs/fashion_mnist.py --random_init \
      --output=runs/fashion_mnist/samples.png

Expected cost: sampling a 10x8 grid from randomly initialised small models takes
about half a minute on a 2-core CPU (mostly compilation). Training both stages
with this config arrives with the training library (see README, status).
Models: tokenizer "small" (~0.5M parameters, 512 l2-normalised 16-d codes),
transformer "small" (4 layers, hidden 128, ~0.9M parameters).
"""
import ml_collections

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
               "Shirt", "Sneaker", "Bag", "Ankle boot")


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 42
  config.image_size = 32
  config.num_classes = 10
  config.class_names = CLASS_NAMES

  # Stage 1: the tokenizer (any VQVAE field may be overridden here).
  config.tokenizer = ml_collections.ConfigDict(dict(preset="small", channels=1))
  # Stage 2: the transformer; vocab and length follow the tokenizer and data.
  config.transformer = ml_collections.ConfigDict(dict(preset="small"))

  config.sampling = ml_collections.ConfigDict(dict(
      num_iter=12, choice_temperature=4.5, mask_scheduling_method="cosine",
      guidance_scale=0.0, guidance_schedule="constant",
      sampling_temperature=1.0, top_k=0, samples_per_class=8))
  return config
