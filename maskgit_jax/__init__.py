"""maskgit_jax: MaskGIT in JAX/Flax — tokenizer, transformer, parallel decoding, training."""

__version__ = "0.1.0"
